//! No process outlives its parent: `m2m devnet` and `m2m sim`, stopped with SIGTERM (an orderly
//! stop, as a service manager sends it) or killed with SIGKILL (no destructor runs), leave none
//! of the chains they started (anvil, bitcoind) running — nor the reaper that watches them.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cli::Device;

/// Every process's parent and name, from `/proc/<pid>/stat`, skipping zombies (a dead child
/// of a parent that did not wait yet, or of an init that does not reap, runs nothing).
fn process_table() -> HashMap<u32, (u32, String)> {
    let mut table = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses: split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let mut rest = stat[close + 1..].split_whitespace();
        let (Some(state), Some(ppid)) = (rest.next(), rest.next()) else {
            continue;
        };
        if state == "Z" {
            continue;
        }
        if let Ok(ppid) = ppid.parse() {
            table.insert(pid, (ppid, name));
        }
    }
    table
}

/// The live descendants of `root` (pid → name).
fn descendants(root: u32) -> HashMap<u32, String> {
    let table = process_table();
    let mut found = HashMap::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, (ppid, name)) in &table {
            if *ppid == parent && found.insert(*pid, name.clone()).is_none() {
                frontier.push(*pid);
            }
        }
    }
    found
}

/// Waits until every one of `pids` is gone (exited, or a zombie); panics naming survivors.
fn assert_all_gone(pids: &HashMap<u32, String>, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    loop {
        let table = process_table();
        let alive: Vec<_> = pids
            .iter()
            .filter(|(pid, name)| table.get(pid).is_some_and(|(_, now)| now == *name))
            .collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still running {within:?} later: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `parent`'s descendants until `wanted` names are all among them.
fn wait_for_children(
    parent: &mut Child,
    wanted: &[&str],
    within: Duration,
) -> HashMap<u32, String> {
    let deadline = Instant::now() + within;
    loop {
        let found = descendants(parent.id());
        if wanted
            .iter()
            .all(|name| found.values().any(|have| have == name))
        {
            return found;
        }
        if let Ok(Some(status)) = parent.try_wait() {
            panic!("the parent exited ({status}) before starting {wanted:?}");
        }
        assert!(
            Instant::now() < deadline,
            "no {wanted:?} among the children within {within:?}: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} failed");
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `m2m devnet` until it says it is ready; its children then include anvil and the reaper.
fn ready_devnet(device: &Device, log: &std::path::Path) -> (Child, HashMap<u32, String>) {
    let mut child = device.spawn(&["devnet", "--port", "0"], log);
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("devnet printed nothing").unwrap();
    assert!(first.starts_with("local chain at"), "{first}");
    // Keep reading in the background so the pipe never fills.
    std::thread::spawn(move || lines.for_each(drop));
    let children = wait_for_children(&mut child, &["anvil", "sh"], Duration::from_secs(10));
    (child, children)
}

#[test]
fn devnet_stopped_by_sigterm_stops_anvil_and_exits_cleanly() {
    let device = Device::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let (mut devnet, children) = ready_devnet(&device, log.path());
    signal(&devnet, "TERM");
    let status = wait_exit(&mut devnet, Duration::from_secs(30));
    assert!(
        status.success(),
        "SIGTERM is an orderly stop: {status}; {}",
        std::fs::read_to_string(log.path()).unwrap_or_default()
    );
    assert_all_gone(&children, Duration::from_secs(10), "devnet after SIGTERM");
}

#[test]
fn devnet_killed_by_sigkill_leaves_no_anvil() {
    let device = Device::new();
    let log = tempfile::NamedTempFile::new().unwrap();
    let (mut devnet, children) = ready_devnet(&device, log.path());
    devnet.kill().unwrap();
    devnet.wait().unwrap();
    assert_all_gone(&children, Duration::from_secs(15), "devnet after SIGKILL");
}

/// The simulator, once its chains run: anvil and a regtest bitcoind at least.
fn running_sim(out: &std::path::Path) -> (Child, HashMap<u32, String>) {
    let mut sim = Command::new(env!("CARGO_BIN_EXE_m2m"))
        .args(["sim", "quick", "--quiet", "--out"])
        .arg(out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let children = wait_for_children(
        &mut sim,
        &["anvil", "bitcoind", "sh"],
        Duration::from_secs(120),
    );
    (sim, children)
}

#[test]
fn sim_stopped_or_killed_leaves_no_chain_running() {
    let out = tempfile::tempdir().unwrap();

    let (mut sim, children) = running_sim(&out.path().join("term"));
    signal(&sim, "TERM");
    let status = wait_exit(&mut sim, Duration::from_secs(60));
    assert_eq!(status.code(), Some(1), "an interrupted run is a failed run");
    assert_all_gone(&children, Duration::from_secs(15), "sim after SIGTERM");

    let (mut sim, children) = running_sim(&out.path().join("kill"));
    sim.kill().unwrap();
    sim.wait().unwrap();
    assert_all_gone(&children, Duration::from_secs(15), "sim after SIGKILL");
}
