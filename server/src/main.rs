//! The `skillhive` binary. Everything lives in the library; this only hands over control.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    server::cli::main().await
}
