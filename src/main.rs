//! CLI entry: parse the command line, set up logging, hand over to `runtime_tap::cli`.

fn main() -> std::process::ExitCode {
    runtime_tap::cli::main()
}
