//! Provisioning `bitcoind`: found on the machine, or built once per machine from source.
//!
//! The machines this project runs on reach the package registries only, and the one registry
//! that carries Bitcoin Core is crates.io: `libbitcoinkernel-sys` 0.4.1 vendors its full source.
//! The crate is fetched with cargo (which checks it against the index's checksum), unpacked, and
//! built with cmake into `<cache>/tools/bitcoind-kernel-sys-0.4.1` (about 8–20 minutes on two
//! cores, progress and an estimate on stderr). Concurrent callers wait on a lock and then find it
//! built. An interrupted build leaves no half install: binaries are copied into a temporary
//! folder that is renamed into place only after `bitcoind -version` answers.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::reaper::GuardedChild;
use super::{ProvisionLock, ToolError, cache_dir, last_lines, run_checked};

/// The crates.io package whose vendored source is built.
const CRATE: &str = "libbitcoinkernel-sys";
/// Its pinned version.
const VERSION: &str = "0.4.1";
/// Debian packages the build needs besides a C++ compiler.
const BUILD_PACKAGES: [&str; 4] = ["cmake", "pkg-config", "libboost-dev", "libevent-dev"];
/// Only the daemon and the CLI: no wallet (BDK is ours), GUI, tests or IPC.
const CMAKE_OPTIONS: [&str; 13] = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_DAEMON=ON",
    "-DBUILD_CLI=ON",
    "-DENABLE_WALLET=OFF",
    "-DWITH_EMBEDDED_ASMAP=OFF",
    "-DENABLE_IPC=OFF",
    "-DBUILD_TESTS=OFF",
    "-DBUILD_BENCH=OFF",
    "-DBUILD_GUI=OFF",
    "-DBUILD_KERNEL_LIB=OFF",
    "-DBUILD_UTIL=OFF",
    "-DBUILD_TX=OFF",
    "-DBUILD_WALLET_TOOL=OFF",
];

/// The cached build's install folder.
pub(super) fn cached_prefix() -> PathBuf {
    cache_dir()
        .join("tools")
        .join(format!("bitcoind-kernel-sys-{VERSION}"))
}

/// `BITCOIND_EXE`, `bitcoind` on `PATH`, or the cached build, without building anything.
pub fn find_bitcoind() -> Option<PathBuf> {
    if let Some(exe) = std::env::var_os("BITCOIND_EXE").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(exe));
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bitcoind"))
            .find(|candidate| candidate.is_file())
    }) {
        return Some(found);
    }
    let cached = cached_prefix().join("bin/bitcoind");
    cached.is_file().then_some(cached)
}

/// Where `bitcoind` is, building it first (once per machine) when it is nowhere to be found.
/// Blocks for the whole build; progress goes to stderr.
pub fn ensure_bitcoind() -> Result<PathBuf, ToolError> {
    if let Some(found) = find_bitcoind() {
        return Ok(found);
    }
    let prefix = cached_prefix();
    let _lock = ProvisionLock::acquire(&cache_dir().join("tools/bitcoind-build.lock"))?;
    let exe = prefix.join("bin/bitcoind");
    if exe.is_file() {
        return Ok(exe);
    }
    build_into(&prefix)?;
    Ok(exe)
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> ToolError + '_ {
    move |source| ToolError::Io {
        path: path.to_owned(),
        source,
    }
}

fn build_into(prefix: &Path) -> Result<(), ToolError> {
    let started = Instant::now();
    eprintln!(
        "m2m: bitcoind is not on this machine: building Bitcoin Core from the crates.io package \
         {CRATE} {VERSION} into {} (once per machine; about {} on {} cores)",
        prefix.display(),
        estimate(),
        cores()
    );
    super::debian::ensure_packages("building bitcoind (or set BITCOIND_EXE)", &BUILD_PACKAGES)?;
    let work = cache_dir()
        .join("tools")
        .join(format!("bitcoind-build-{VERSION}"));
    if work.exists() {
        fs::remove_dir_all(&work).map_err(io_at(&work))?;
    }
    let source = fetch_source(&work)?;
    let build = work.join("build");
    eprintln!("m2m: bitcoind: configuring (cmake)");
    let log = work.join("cmake-configure.log");
    let log_file = fs::File::create(&log).map_err(io_at(&log))?;
    let status = Command::new("cmake")
        .arg("-S")
        .arg(&source)
        .arg("-B")
        .arg(&build)
        .args(CMAKE_OPTIONS)
        .stdout(log_file.try_clone().map_err(io_at(&log))?)
        .stderr(log_file)
        .status()
        .map_err(|source| ToolError::Missing {
            program: "cmake",
            hint: "install the Debian package cmake, or set BITCOIND_EXE to a bitcoind 28+",
            source,
        })?;
    if !status.success() {
        return Err(failed_with_log("cmake configure", status, &log));
    }
    compile(&build, &work.join("cmake-build.log"), started)?;

    let staging = prefix.with_extension("tmp");
    if staging.exists() {
        fs::remove_dir_all(&staging).map_err(io_at(&staging))?;
    }
    let bin = staging.join("bin");
    fs::create_dir_all(&bin).map_err(io_at(&bin))?;
    for program in ["bitcoind", "bitcoin-cli"] {
        let from = build.join("bin").join(program);
        fs::copy(&from, bin.join(program)).map_err(io_at(&from))?;
    }
    let version = run_checked(Command::new(bin.join("bitcoind")).arg("-version"))?;
    if prefix.exists() {
        fs::remove_dir_all(prefix).map_err(io_at(prefix))?;
    }
    fs::rename(&staging, prefix).map_err(io_at(prefix))?;
    fs::remove_dir_all(&work).map_err(io_at(&work))?;
    eprintln!(
        "m2m: bitcoind ready in {} ({})",
        minutes(started.elapsed()),
        version.lines().next().unwrap_or("").trim()
    );
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Measured here: 7.5–20 minutes on two cores; the compile scales with the cores.
fn estimate() -> String {
    let cores = cores().max(1) as u64;
    format!("{}–{} minutes", (16 / cores).max(2), (40 / cores).max(5))
}

fn minutes(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    format!("{}m{:02}s", secs / 60, secs % 60)
}

/// Fetches the crate through cargo into its registry cache and unpacks it into `work`;
/// returns the Bitcoin Core source folder.
fn fetch_source(work: &Path) -> Result<PathBuf, ToolError> {
    eprintln!("m2m: bitcoind: fetching {CRATE} {VERSION} from crates.io");
    let project = work.join("fetch");
    let src = project.join("src");
    fs::create_dir_all(&src).map_err(io_at(&src))?;
    let manifest = project.join("Cargo.toml");
    fs::write(
        &manifest,
        format!(
            "[package]\nname = \"fetch-bitcoin-core\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\
             publish = false\n\n[dependencies]\n{CRATE} = \"={VERSION}\"\n\n[workspace]\n"
        ),
    )
    .map_err(io_at(&manifest))?;
    let lib = src.join("lib.rs");
    fs::write(&lib, "").map_err(io_at(&lib))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_checked(
        Command::new(cargo)
            .args(["fetch", "--quiet", "--manifest-path"])
            .arg(&manifest)
            // Our target directory and config must not leak into the helper project.
            .env_remove("CARGO_TARGET_DIR"),
    )?;
    let archive = find_crate_archive()?;
    run_checked(
        Command::new("tar")
            .arg("xzf")
            .arg(&archive)
            .arg("-C")
            .arg(work),
    )?;
    Ok(work.join(format!("{CRATE}-{VERSION}")).join("bitcoin"))
}

fn find_crate_archive() -> Result<PathBuf, ToolError> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from(".cargo"));
    let registries = cargo_home.join("registry/cache");
    let name = format!("{CRATE}-{VERSION}.crate");
    fs::read_dir(&registries)
        .map_err(io_at(&registries))?
        .filter_map(Result::ok)
        .map(|index| index.path().join(&name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| ToolError::Io {
            path: registries.join("*").join(&name),
            source: std::io::ErrorKind::NotFound.into(),
        })
}

/// `cmake --build` with a progress line on stderr every few percent: cmake prints `[ 42%]`
/// before each step. Its own output goes to `log`, shown in part if it fails.
fn compile(build: &Path, log: &Path, started: Instant) -> Result<(), ToolError> {
    let mut command = Command::new("cmake");
    command
        .arg("--build")
        .arg(build)
        .args([
            "--parallel",
            &cores().to_string(),
            "--target",
            "bitcoind",
            "bitcoin-cli",
        ])
        .stdout(Stdio::piped())
        .stderr(fs::File::create(log).map_err(io_at(log))?)
        // Its own process group, so that the reaper stops the compilers too if we are killed.
        .process_group(0);
    let mut guarded = GuardedChild::spawn(&mut command).map_err(io_at(build))?;
    let compile_started = Instant::now();
    let mut shown = 0u64;
    let mut recent = std::collections::VecDeque::with_capacity(10);
    if let Some(stdout) = guarded.child().stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(percent) = cmake_percent(&line)
                && percent >= shown + 5
            {
                shown = percent;
                eprintln!(
                    "m2m: bitcoind: {}",
                    progress(percent, compile_started, started)
                );
            }
            if recent.len() == 10 {
                recent.pop_front();
            }
            recent.push_back(line);
        }
    }
    let status = guarded.child().wait().map_err(io_at(build))?;
    if !status.success() {
        let mut shown: Vec<String> = recent.into();
        shown.push(last_lines(&fs::read_to_string(log).unwrap_or_default(), 15));
        return Err(ToolError::CommandFailed {
            command: format!("cmake --build {}", build.display()),
            detail: format!("{status}\n{}", shown.join("\n")),
        });
    }
    Ok(())
}

fn cmake_percent(line: &str) -> Option<u64> {
    let inside = line.trim_start().strip_prefix('[')?;
    let (number, _) = inside.split_once("%]")?;
    number.trim().parse().ok()
}

fn progress(percent: u64, compile_started: Instant, started: Instant) -> String {
    let elapsed = compile_started.elapsed();
    let left = if percent > 0 && percent < 100 {
        let total = elapsed.as_secs_f64() * 100.0 / percent as f64;
        format!(
            ", about {} left",
            minutes(Duration::from_secs_f64(total - elapsed.as_secs_f64()))
        )
    } else {
        String::new()
    };
    format!(
        "compiling {percent:>3}% ({} elapsed{left})",
        minutes(started.elapsed())
    )
}

fn failed_with_log(what: &str, status: std::process::ExitStatus, log: &Path) -> ToolError {
    let text = fs::read_to_string(log).unwrap_or_default();
    ToolError::CommandFailed {
        command: what.to_owned(),
        detail: format!("{status}\n{}", last_lines(&text, 15)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cmake_progress() {
        assert_eq!(
            cmake_percent("[ 42%] Building CXX object src/x.cpp.o"),
            Some(42)
        );
        assert_eq!(cmake_percent("[100%] Linking CXX executable"), Some(100));
        assert_eq!(cmake_percent("-- Configuring done"), None);
        assert_eq!(cmake_percent("[abc%] nope"), None);
    }

    #[test]
    fn estimates_time_left_from_the_rate_so_far() {
        let started = Instant::now() - Duration::from_secs(120);
        let line = progress(50, started, started);
        assert!(
            line.starts_with("compiling  50% (2m00s elapsed, about 2m0"),
            "{line}"
        );
    }
}
