fn main() -> std::process::ExitCode {
    safepoint::cli::main()
}
