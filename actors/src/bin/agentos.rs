//! The `agentos` binary: parses the command line and hands over to the library.

fn main() -> std::process::ExitCode {
    agentos_actors::cli::main()
}
