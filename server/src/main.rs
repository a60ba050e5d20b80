//! The `skillhive` binary. Everything lives in the library; this only hands over control.

fn main() -> std::process::ExitCode {
    tokio::runtime::Runtime::new().expect("the async runtime starts").block_on(server::cli::main())
}
