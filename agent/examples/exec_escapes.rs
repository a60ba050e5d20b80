//! Runs the exec-escape corpus (`agent::exec::escapes`) under this host's sandbox and
//! prints, per class, the attacks tried, refused before running, and contained; then every
//! attack that was not contained. Our half of `bench/reliability`.

use std::collections::BTreeMap;

use agent::exec::escapes::{Arena, ATTACKS};
use agent::exec::Sandbox;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sandbox = Sandbox::default();
    println!("sandbox: {sandbox:?}");
    let arena = Arena::new()?;
    let mut classes: BTreeMap<_, (usize, usize, usize)> = BTreeMap::new();
    let mut escaped = Vec::new();
    for attack in ATTACKS {
        let verdict = arena.attack(*attack, &sandbox).await;
        let row = classes.entry(attack.class).or_default();
        row.0 += 1;
        row.1 += verdict.refused.is_some() as usize;
        row.2 += verdict.contained() as usize;
        if std::env::args().any(|a| a == "--verbose") {
            println!("  {:<70} {}", verdict.command, verdict.refused.as_deref().unwrap_or("ran, contained"));
        }
        if !verdict.contained() {
            escaped.push(format!("{}: {:?}", verdict.command, verdict.escaped));
        }
    }
    println!("{:<28} {:>6} {:>8} {:>10}", "exec attack class", "tried", "refused", "contained");
    for (class, (tried, refused, contained)) in &classes {
        println!("{:<28} {:>6} {:>8} {:>10}", class.name(), tried, refused, contained);
    }
    for line in &escaped {
        println!("ESCAPED {line}");
    }
    anyhow::ensure!(escaped.is_empty(), "{} attacks escaped", escaped.len());
    Ok(())
}
