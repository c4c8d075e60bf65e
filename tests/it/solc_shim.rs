//! The solc-js shim speaks native solc's command line well enough for forge and for direct use.

use std::io::Write;
use std::process::{Command, Stdio};

use m2m::node::tools::{Foundry, SOLC_VERSION};

#[test]
fn shim_answers_version_and_standard_json_with_imports() {
    let foundry = Foundry::ensure().expect("provision local tools");
    foundry.verify().unwrap();
    let version = Command::new(&foundry.solc)
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(version.stdout).unwrap();
    assert!(
        version.contains(&format!("Version: {SOLC_VERSION}")),
        "{version}"
    );

    // Standard JSON with an import that is not in the input: the shim resolves it from --base-path.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Base.sol"), "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\ncontract Base { function one() external pure returns (uint256) { return 1; } }\n").unwrap();
    let input = serde_json::json!({
        "language": "Solidity",
        "sources": { "Main.sol": { "content": "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.0;\nimport \"Base.sol\";\ncontract Main is Base {}\n" } },
        "settings": { "outputSelection": { "*": { "*": ["evm.bytecode.object"] } } }
    });
    let mut child = Command::new(&foundry.solc)
        .args(["--standard-json", "--base-path"])
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output: serde_json::Value =
        serde_json::from_slice(&child.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        output.get("errors").is_none_or(|e| e
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["severity"] != "error")),
        "{output}"
    );
    let bytecode = output["contracts"]["Main.sol"]["Main"]["evm"]["bytecode"]["object"]
        .as_str()
        .unwrap();
    assert!(bytecode.len() > 100, "Main compiled to bytecode");
}

#[test]
fn forge_builds_and_tests_offline_with_the_shim() {
    let foundry = Foundry::ensure().expect("provision local tools");
    let project = tempfile::tempdir().unwrap();
    let root = project.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(root.join("test")).unwrap();
    std::fs::write(
        root.join("foundry.toml"),
        "[profile.default]\nsrc = \"src\"\ntest = \"test\"\nout = \"out\"\noffline = true\n",
    )
    .unwrap();
    std::fs::write(root.join("src/Counter.sol"), "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\ncontract Counter { uint256 public count; function increment() external { count += 1; } }\n").unwrap();
    std::fs::write(root.join("test/Counter.t.sol"), "// SPDX-License-Identifier: MIT\npragma solidity ^0.8.20;\nimport {Counter} from \"../src/Counter.sol\";\ncontract CounterTest { function test_increment() public { Counter c = new Counter(); c.increment(); require(c.count() == 1, \"count\"); } }\n").unwrap();
    let output = Command::new(&foundry.forge)
        .arg("test")
        .current_dir(root)
        .env("FOUNDRY_SOLC", &foundry.solc)
        .env("FOUNDRY_DISABLE_NIGHTLY_WARNING", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "forge test failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("[PASS] test_increment()"), "{stdout}");
    assert!(root.join("out/Counter.sol/Counter.json").exists());
}
