//! Starts the server on the default model and puts a bounded load on it; prints the
//! table `bench/reliability` shows. Usage: load [USERS] [CHATS_PER_USER] [MANIFESTS] [SUBSCRIBERS]

use e2e::load::{run, LoadSpec};
use e2e::Server;

#[tokio::main]
async fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let spec = LoadSpec { users: arg(1, 25), chats_per_user: arg(2, 4), manifest_requests: arg(3, 500), subscribers: arg(4, 50) };
    let server = Server::start(&[]);
    let report = run(&server, spec).await;
    report.print();
    if report.errors() > 0 {
        std::process::exit(1);
    }
}
