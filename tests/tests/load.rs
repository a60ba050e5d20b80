//! A bounded load on the real model: 100 concurrent small chats over 25 users (each
//! within the default per-user limits), 500 sync-manifest requests and 50 open change
//! feeds. Nothing fails, and the server's memory afterwards is under the ceiling
//! README.md documents for the default model.

use e2e::load::{run, LoadSpec};
use e2e::Server;

/// The steady-state ceiling README.md documents for the default model, in MiB.
const CEILING_MIB: u64 = 640;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_load_is_served_without_errors_and_memory_returns_under_the_ceiling() {
    let server = Server::start(&[]);
    let report = run(&server, LoadSpec { users: 25, chats_per_user: 4, manifest_requests: 500, subscribers: 50 }).await;
    report.print();
    assert_eq!(report.errors(), 0, "{:?}", (&report.chats.errors, &report.manifests.errors, &report.feeds.errors));
    assert_eq!(report.chats.requests, 100);
    assert_eq!(report.feeds.latencies.len(), 50, "every feed saw the publication");
    let after_mib = report.rss_after_kib / 1024;
    assert!(after_mib <= CEILING_MIB, "server RSS after the load is {after_mib} MiB, above the documented {CEILING_MIB} MiB");
}
