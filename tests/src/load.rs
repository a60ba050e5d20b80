//! A bounded load against a running server: concurrent small chats spread over users,
//! a burst of sync-manifest requests, and open change feeds that must each see a
//! publication made under the load. Shared by the load test and `bench/reliability`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use crate::{add_user, client, Server, MODEL};

/// How much load to put on.
#[derive(Debug, Clone, Copy)]
pub struct LoadSpec {
    pub users: usize,
    pub chats_per_user: usize,
    pub manifest_requests: usize,
    pub subscribers: usize,
}

/// What one kind of request saw.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub requests: usize,
    pub errors: Vec<String>,
    pub latencies: Vec<Duration>,
}

impl Tally {
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        sorted.get(((sorted.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    pub chats: Tally,
    pub manifests: Tally,
    pub feeds: Tally,
    /// Resident memory of the server before the load, right after it, and its peak.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
    /// Resident memory right after the burst, before the next request.
    pub rss_idle_after_burst_kib: u64,
    pub rss_peak_kib: u64,
    pub wall: Duration,
}

impl LoadReport {
    pub fn errors(&self) -> usize {
        self.chats.errors.len() + self.manifests.errors.len() + self.feeds.errors.len()
    }

    pub fn print(&self) {
        println!("{:<22} {:>9} {:>7} {:>10} {:>10}", "load", "requests", "errors", "p50 ms", "p99 ms");
        for (name, tally) in [("chat completions", &self.chats), ("sync manifests", &self.manifests), ("change feeds", &self.feeds)] {
            println!(
                "{:<22} {:>9} {:>7} {:>10} {:>10}",
                name,
                tally.requests,
                tally.errors.len(),
                tally.percentile(0.5).as_millis(),
                tally.percentile(0.99).as_millis()
            );
        }
        println!(
            "server RSS: {} MiB before, {} MiB idle right after the burst, {} MiB after the next request, {} MiB peak; wall {:.1} s",
            self.rss_before_kib / 1024,
            self.rss_idle_after_burst_kib / 1024,
            self.rss_after_kib / 1024,
            self.rss_peak_kib / 1024,
            self.wall.as_secs_f64()
        );
        for error in self.chats.errors.iter().chain(&self.manifests.errors).chain(&self.feeds.errors).take(10) {
            println!("error: {error}");
        }
    }
}

/// A field of `/proc/<pid>/status`, in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find(|l| l.starts_with(field)).and_then(|l| l.split_whitespace().nth(1)).and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn chat(url: &str, token: &str) -> Result<(), String> {
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4});
    let response =
        client().post(format!("{url}/v1/chat/completions")).bearer_auth(token).json(&body).send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    let reply: Value = response.json().await.map_err(|e| e.to_string())?;
    if status != 200 || reply["choices"][0]["message"]["content"].as_str().is_none() {
        return Err(format!("chat: {status} {reply}"));
    }
    Ok(())
}

/// Puts `spec`'s load on `server` (the default model must be serving) and reports.
pub async fn run(server: &Server, spec: LoadSpec) -> LoadReport {
    let pid = server.pid();
    let tokens: Vec<String> = (0..spec.users).map(|i| add_user(server.data_dir.path(), &format!("load-{i}"))).collect();
    // One chat first, so that the baseline is a server that has served.
    chat(&server.url, &server.token).await.expect("a first chat");
    let mut report = LoadReport { rss_before_kib: proc_status_kib(pid, "VmRSS:"), ..Default::default() };
    let started = Instant::now();

    // Change feeds, opened before the load and held through it.
    let slug = format!("load-{}", std::process::id());
    let feeds: Vec<_> = (0..spec.subscribers)
        .map(|_| {
            let (url, token, slug) = (server.url.clone(), server.token.clone(), slug.clone());
            tokio::spawn(async move {
                let opened = Instant::now();
                let response =
                    client().get(format!("{url}/api/sync/events")).bearer_auth(&token).send().await.map_err(|e| e.to_string())?;
                if response.status() != 200 {
                    return Err(format!("feed: {}", response.status()));
                }
                let mut body = response.bytes_stream();
                let mut seen = String::new();
                let deadline = tokio::time::sleep(Duration::from_secs(600));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        chunk = body.next() => match chunk {
                            Some(Ok(bytes)) => {
                                seen.push_str(&String::from_utf8_lossy(&bytes));
                                if seen.contains(&slug) {
                                    return Ok(opened.elapsed());
                                }
                            }
                            other => return Err(format!("feed ended: {other:?}")),
                        },
                        () = &mut deadline => return Err("feed: no event".into()),
                    }
                }
            })
        })
        .collect();

    let chats: Vec<_> = tokens
        .iter()
        .flat_map(|token| (0..spec.chats_per_user).map(move |_| token.clone()))
        .map(|token| {
            let url = server.url.clone();
            tokio::spawn(async move {
                let sent = Instant::now();
                chat(&url, &token).await.map(|()| sent.elapsed())
            })
        })
        .collect();

    let manifest_client = client();
    let manifests = futures::stream::iter(0..spec.manifest_requests)
        .map(|i| {
            let (http, url, token) = (manifest_client.clone(), server.url.clone(), tokens[i % tokens.len()].clone());
            async move {
                let sent = Instant::now();
                let response = http.get(format!("{url}/api/sync/manifest")).bearer_auth(token).send().await.map_err(|e| e.to_string())?;
                match response.status().as_u16() {
                    200 | 304 => Ok(sent.elapsed()),
                    other => Err(format!("manifest: {other}")),
                }
            }
        })
        .buffer_unordered(50)
        .collect::<Vec<_>>()
        .await;
    for result in manifests {
        report.manifests.requests += 1;
        match result {
            Ok(latency) => report.manifests.latencies.push(latency),
            Err(error) => report.manifests.errors.push(error),
        }
    }
    for chat in chats {
        report.chats.requests += 1;
        match chat.await.expect("chat task") {
            Ok(latency) => report.chats.latencies.push(latency),
            Err(error) => report.chats.errors.push(error),
        }
    }

    // A publication under the load reaches every open feed.
    let skill = format!("---\nname: {slug}\ndescription: Load marker. Use never.\n---\nNothing.\n");
    let published = client()
        .post(format!("{}/api/skills", server.url))
        .bearer_auth(&server.token)
        .json(&json!({"slug": slug, "files": [{"path": "SKILL.md", "content": skill}]}))
        .send()
        .await
        .map(|r| r.status().as_u16());
    if !matches!(published, Ok(201)) {
        report.feeds.errors.push(format!("publish: {published:?}"));
    }
    for feed in feeds {
        report.feeds.requests += 1;
        match feed.await.expect("feed task") {
            Ok(latency) => report.feeds.latencies.push(latency),
            Err(error) => report.feeds.errors.push(error),
        }
    }
    report.wall = started.elapsed();
    // The engine keeps the buffers of its largest batch until it next runs one: after a
    // burst of short chats (100 at once, a few tokens each) an idle server stays at the
    // burst's size, and the next request gives the memory back. "After" is measured once
    // the server has served one more chat, as it would in use.
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.rss_idle_after_burst_kib = proc_status_kib(pid, "VmRSS:");
    chat(&server.url, &server.token).await.expect("a chat after the load");
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.rss_after_kib = proc_status_kib(pid, "VmRSS:");
    report.rss_peak_kib = proc_status_kib(pid, "VmHWM:");
    report
}
