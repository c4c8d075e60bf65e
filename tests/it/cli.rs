//! The `m2m` binary end to end: init, address, top-up URIs, the data-directory lock, bad input,
//! and a scan of everything it printed or wrote for seed words and key bytes.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::str::FromStr;

use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::secp256k1::Secp256k1;
use m2m::node::datadir::DataDir;

pub const PASSPHRASE: &str = "device passphrase for tests";
const ABANDON_ABOUT: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

pub struct Device {
    _tmp: tempfile::TempDir,
    pub data_dir: PathBuf,
}

impl Device {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("device");
        Self {
            _tmp: tmp,
            data_dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_m2m"));
        command.arg("--data-dir").arg(&self.data_dir).args(args);
        command
            .env("M2M_PASSPHRASE", PASSPHRASE)
            .env("RUST_LOG", "trace")
            .env_remove("M2M_PASSPHRASE_FILE");
        command.stdin(Stdio::null());
        command
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn run_ok(&self, args: &[&str]) -> Output {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "m2m {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Starts `m2m` in the background: stdout piped, stderr to `stderr_file`, logs at info.
    pub fn spawn(&self, args: &[&str], stderr_file: &std::path::Path) -> std::process::Child {
        self.command(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_file).unwrap())
            .spawn()
            .unwrap()
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

pub fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn restore_prints_the_known_addresses_and_topup_uris() {
    let device = Device::new();
    let output = device.run_with_stdin(
        &["--json", "init", "--restore", "--network", "bitcoin"],
        ABANDON_ABOUT,
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let info = stdout_json(&output);
    assert_eq!(
        info["bitcoin"],
        "bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr"
    );
    assert_eq!(
        info["ethereum"],
        "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
    );
    assert_eq!(info["network"], "bitcoin");

    let btc =
        stdout_json(&device.run_ok(&["--json", "topup", "--chain", "btc", "--amount", "0.001"]));
    assert_eq!(
        btc["uri"],
        "bitcoin:bc1p5cyxnuxmeuwuvkwfem96lqzszd02n6xdcjrs20cac6yqjjwudpxqkedrcr?amount=0.001&label=m2m%20device"
    );
    assert_eq!(btc["amount_base_units"], "100000");
    let evm =
        stdout_json(&device.run_ok(&["--json", "topup", "--chain", "evm", "--amount", "0.25"]));
    assert_eq!(
        evm["uri"],
        "ethereum:0x9858EfFD232B4033E47d90003D41EC34EcaEda94@31337?value=250000000000000000"
    );

    let text = device.run_ok(&["topup", "--chain", "evm"]);
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.starts_with("ethereum:0x9858EfFD232B4033E47d90003D41EC34EcaEda94@31337\n"),
        "{text}"
    );
    assert!(text.contains('█'), "a QR code is drawn");
}

#[test]
fn init_records_owner_and_refuses_to_overwrite() {
    let device = Device::new();
    let owner = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94";
    let created = stdout_json(&device.run_ok(&["--json", "init", "--owner", owner]));
    assert!(
        created["bitcoin"].as_str().unwrap().starts_with("bcrt1p"),
        "regtest by default"
    );
    assert_eq!(created["owner"], owner);
    let keystore = device.data_dir.join("wallet.keystore");
    let before = std::fs::read(&keystore).unwrap();

    let again = device.run(&["init"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(&keystore).unwrap(), before);

    let shown = stdout_json(&device.run_ok(&["--json", "address"]));
    assert_eq!(shown["ethereum"], created["ethereum"]);
    assert_eq!(shown["owner"], owner);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let device = Device::new();
    let cases: &[(&[&str], &str)] = &[
        (&["address"], "no keystore"),
        (&["init", "--owner", "0x1234"], "not an EVM address"),
        (&["init", "--network", "moon"], "unknown network"),
        (
            &["init", "--kdf-memory-mib", "1"],
            "key-derivation parameters rejected",
        ),
        (&["init", "--words", "13"], "12 or 24 words"),
    ];
    for (args, expected) in cases {
        let output = device.run(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        assert!(
            stderr(&output).contains(expected),
            "{args:?}: {}",
            stderr(&output)
        );
    }
    assert!(!device.data_dir.join("wallet.keystore").exists());

    let restore = device.run_with_stdin(&["init", "--restore"], "abandon abandon abandon");
    assert!(
        stderr(&restore).contains("invalid BIP-39 mnemonic"),
        "{}",
        stderr(&restore)
    );
    assert!(!device.data_dir.join("wallet.keystore").exists());

    device.run_ok(&["init"]);
    let short = device
        .command(&["address"])
        .env("M2M_PASSPHRASE", "wrong passphrase")
        .output()
        .unwrap();
    assert!(
        stderr(&short).contains("wrong passphrase"),
        "{}",
        stderr(&short)
    );
    let amount = device.run(&["topup", "--chain", "btc", "--amount=-1"]);
    assert!(
        stderr(&amount).contains("invalid amount"),
        "{}",
        stderr(&amount)
    );
    let token_on_btc = device.run(&[
        "topup",
        "--chain",
        "btc",
        "--token",
        "0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
    ]);
    assert!(!token_on_btc.status.success());
}

#[test]
fn passphrase_file_is_used_and_short_passphrases_are_refused() {
    let device = Device::new();
    let file = device.data_dir.with_file_name("passphrase");
    std::fs::write(&file, "from a file, not the environment\n").unwrap();
    let mut init = device.command(&["init"]);
    init.arg("--passphrase-file")
        .arg(&file)
        .env_remove("M2M_PASSPHRASE");
    assert!(init.output().unwrap().status.success());
    let via_env = device.run(&["address"]);
    assert!(
        stderr(&via_env).contains("wrong passphrase"),
        "the file's passphrase is the one that counts"
    );

    let other = Device::new();
    let short = other
        .command(&["init"])
        .env("M2M_PASSPHRASE", "short")
        .output()
        .unwrap();
    assert!(
        stderr(&short).contains("at least 8 characters"),
        "{}",
        stderr(&short)
    );
    let none = other
        .command(&["init"])
        .env_remove("M2M_PASSPHRASE")
        .output()
        .unwrap();
    assert!(stderr(&none).contains("no passphrase"), "{}", stderr(&none));
}

#[test]
fn a_locked_data_directory_is_refused() {
    let device = Device::new();
    device.run_ok(&["init"]);
    let held = DataDir::open(&device.data_dir).unwrap();
    let refused = device.run(&["address"]);
    assert!(!refused.status.success());
    let message = stderr(&refused);
    assert!(
        message.contains("in use by another m2m process"),
        "{message}"
    );
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    drop(held);
    device.run_ok(&["address"]);
}

/// Runs every command with trace logging, then searches all output except the deliberate
/// `backup`, and every file in the data directory, for the seed and the private keys.
#[test]
fn no_seed_words_or_key_bytes_in_output_logs_or_files() {
    let device = Device::new();
    let mut transcript: Vec<u8> = Vec::new();
    for args in [
        &[
            "-vvv",
            "init",
            "--owner",
            "0x9858EfFD232B4033E47d90003D41EC34EcaEda94",
        ][..],
        &["-vvv", "address"],
        &["-vvv", "--json", "address"],
        &["-vvv", "topup", "--chain", "btc", "--amount", "0.01"],
        &["-vvv", "topup", "--chain", "evm", "--amount", "1"],
    ] {
        let output = device.run_ok(args);
        transcript.extend(output.stdout);
        transcript.extend(output.stderr);
    }
    assert!(
        String::from_utf8_lossy(&transcript).contains("keystore created"),
        "trace logging was on"
    );
    let backup = device.run_ok(&["backup", "--force"]);
    assert!(
        backup.stdout.ends_with(b"\n"),
        "the last word ends its line, so what follows starts on the next"
    );
    let words: Vec<String> = String::from_utf8(backup.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            line.split_once(". ")
                .map(|(_, word)| word.trim().to_string())
        })
        .collect();
    assert_eq!(words.len(), 24);

    let secrets = secrets_of(&words.join(" "));
    let mut haystacks = vec![("transcript".to_string(), transcript)];
    for entry in std::fs::read_dir(&device.data_dir).unwrap() {
        let path = entry.unwrap().path();
        haystacks.push((path.display().to_string(), std::fs::read(&path).unwrap()));
    }
    for (name, bytes) in &haystacks {
        let text = String::from_utf8_lossy(bytes).to_lowercase();
        for window in words.windows(3) {
            assert!(
                !text.contains(&window.join(" ")),
                "three seed words in a row in {name}"
            );
        }
        for (label, secret) in &secrets {
            assert!(!contains(bytes, secret), "{label} bytes in {name}");
            assert!(!text.contains(&hex(secret)), "{label} hex in {name}");
        }
    }
}

/// Entropy, BIP-39 seed and both private keys, derived independently of the wallet crate.
fn secrets_of(phrase: &str) -> Vec<(&'static str, Vec<u8>)> {
    let mnemonic = bip39::Mnemonic::parse(phrase).unwrap();
    let seed = mnemonic.to_seed("");
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(bitcoin::Network::Regtest, &seed).unwrap();
    let key = |path: &str| {
        master
            .derive_priv(&secp, &DerivationPath::from_str(path).unwrap())
            .unwrap()
            .private_key
            .secret_bytes()
            .to_vec()
    };
    vec![
        ("entropy", mnemonic.to_entropy()),
        ("bip39 seed", seed.to_vec()),
        ("ethereum key", key("m/44'/60'/0'/0/0")),
        ("taproot key", key("m/86'/1'/0'/0/0")),
    ]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
