//! The `m2m` command: see `m2m --help` and the README's CLI reference. `m2m sim …` runs the
//! simulator (when built with the `sim` feature, on by default); everything else is the agent.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    #[cfg(feature = "sim")]
    if args.get(1).is_some_and(|arg| arg == "sim") {
        return m2m::sim::cli::main(&args[1..]);
    }
    drop(args);
    m2m::node::cli::main()
}
