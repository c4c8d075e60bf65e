//! The `m2m` command: see `m2m --help` and the README's CLI reference.

fn main() -> std::process::ExitCode {
    m2m_node::cli::main()
}
