//! Children die with their parent, however the parent ends.
//!
//! A handle's `Drop` stops its child (anvil, bitcoind, a Node.js tool) when this process exits
//! normally or unwinds. SIGKILL, `std::process::exit` and aborts run no destructors, so each
//! child is also registered with a *reaper*: one small `/bin/sh` process per parent that reads
//! `+ PID` / `- PID` lines on a pipe from us. The pipe's write end lives only in this process
//! (std opens pipes close-on-exec, so no other child inherits it); when we die for any reason
//! the kernel closes it, the reaper reads end-of-file and stops every child still registered
//! (SIGTERM to its process group or itself, then SIGKILL to survivors).
//!
//! Why not `PR_SET_PDEATHSIG`: it fires when the *thread* that spawned the child exits (tokio's
//! blocking pool retires idle threads), it needs `unsafe` in `pre_exec`, and alloy's anvil
//! launcher spawns its own `Command` where we cannot set it. The reaper works for any pid.

use std::io::Write;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The reaper: ignores the signals a terminal or service manager sends to the whole group
/// (it must outlive us to act), keeps the registered pids, and stops them on end-of-file.
const REAPER_SCRIPT: &str = r#"
trap '' INT TERM HUP QUIT PIPE
pids=' '
while read -r op pid; do
  case "$op" in
    +) pids="$pids$pid " ;;
    -) kept=' '; for p in $pids; do [ "$p" = "$pid" ] || kept="$kept$p "; done; pids=$kept ;;
  esac
done
[ "$pids" = ' ' ] && exit 0
for p in $pids; do kill -TERM -"$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; done
sleep 3
for p in $pids; do kill -KILL -"$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; done
exit 0
"#;

fn reaper() -> &'static Mutex<Option<ChildStdin>> {
    static REAPER: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();
    REAPER.get_or_init(|| {
        let spawned = Command::new("/bin/sh")
            .args(["-c", REAPER_SCRIPT])
            .stdin(Stdio::piped())
            // Not our stdout/stderr: a reader of our output must see end-of-file when we exit.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => Mutex::new(child.stdin.take()),
            Err(error) => {
                tracing::warn!(%error, "no reaper (/bin/sh): children outlive a killed parent");
                Mutex::new(None)
            }
        }
    })
}

fn tell(line: &str) {
    let mut guard = reaper()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(pipe) = guard.as_mut()
        && let Err(error) = pipe.write_all(line.as_bytes())
    {
        tracing::warn!(%error, "reaper gone: children outlive a killed parent");
        *guard = None;
    }
}

/// A child registered with the reaper: stopped if this process dies before the registration
/// drops. Drop it only after the child has been killed and waited for, so that its pid cannot
/// have been reused by an unrelated process while registered (field order does this: a
/// struct's fields drop in declaration order, after its own `Drop`).
#[derive(Debug)]
pub struct ReapOnExit {
    pid: u32,
}

impl ReapOnExit {
    /// Registers `pid`. A child spawned as a process-group leader
    /// (`CommandExt::process_group(0)`) is stopped with its whole group.
    pub fn register(pid: u32) -> Self {
        tell(&format!("+ {pid}\n"));
        Self { pid }
    }
}

impl Drop for ReapOnExit {
    fn drop(&mut self) {
        tell(&format!("- {}\n", self.pid));
    }
}

/// A child process that is killed when its guard drops, and by the reaper if this process
/// dies first. For children the caller otherwise manages as a plain [`std::process::Child`].
#[derive(Debug)]
pub struct GuardedChild {
    child: std::process::Child,
    _reaper: ReapOnExit,
}

impl GuardedChild {
    /// Spawns `command` and registers the child.
    pub fn spawn(command: &mut Command) -> std::io::Result<Self> {
        let child = command.spawn()?;
        let registration = ReapOnExit::register(child.id());
        Ok(Self {
            child,
            _reaper: registration,
        })
    }

    /// The child, for its pipes, pid and exit status.
    pub fn child(&mut self) -> &mut std::process::Child {
        &mut self.child
    }
}

impl Drop for GuardedChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
