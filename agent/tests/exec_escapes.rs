//! The exec-escape corpus against the real sandbox, against the allowlist alone (the
//! operator's `--exec-unsandboxed`), and without bubblewrap (everything refused).

use agent::exec::escapes::{Arena, ATTACKS};
use agent::exec::Sandbox;

/// Tests that count the host's processes run one at a time, so that they count only
/// their own.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|entries| entries.flatten().filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit())).count())
        .unwrap_or(0)
}

#[tokio::test]
async fn every_attack_is_contained_by_the_sandbox() {
    let sandbox = Sandbox::default();
    assert!(matches!(sandbox, Sandbox::Bubblewrap(_)), "scripts/test installs bubblewrap; these tests need it");
    let _counting = COUNTING.lock().await;
    let arena = Arena::new().unwrap();
    let before = process_count();
    let mut failures = Vec::new();
    for attack in ATTACKS {
        let verdict = arena.attack(*attack, &sandbox).await;
        // Under the allowlist every attack is refused before it runs: the rules are
        // defence in depth and must hold on their own.
        if !attack.needs_shell && verdict.refused.is_none() {
            failures.push(format!("{}: ran under the allowlist", verdict.command));
        }
        if !verdict.contained() {
            failures.push(format!("{}: {:?}", verdict.command, verdict.escaped));
        }
    }
    assert!(failures.is_empty(), "escapes:\n{}", failures.join("\n"));
    // The fork bomb and everything else it started are gone with the sandbox.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let after = process_count();
    assert!(after <= before + 10, "{before} processes before the corpus, {after} after");
}

#[tokio::test]
async fn without_a_sandbox_the_allowlist_refuses_every_attack_and_the_shell_is_off() {
    let arena = Arena::new().unwrap();
    for attack in ATTACKS.iter().filter(|a| !a.needs_shell) {
        let verdict = arena.attack(*attack, &Sandbox::Unsandboxed).await;
        assert!(verdict.refused.is_some(), "{} ran unsandboxed", verdict.command);
        assert!(verdict.contained(), "{}: {:?}", verdict.command, verdict.escaped);
    }
    // Without bubblewrap and without the operator's opt-in, nothing runs at all.
    for attack in ATTACKS {
        let verdict = arena.attack(*attack, &Sandbox::Missing).await;
        assert!(verdict.refused.is_some(), "{} ran without a sandbox", verdict.command);
    }
}

#[tokio::test]
async fn ordinary_commands_still_run_under_the_rules() {
    let arena = Arena::new().unwrap();
    std::fs::write(arena.attacker.join("people.csv"), "name,age\nada,36\nalan,41\n").unwrap();
    let sandbox = Sandbox::default();
    for (command, expected) in [
        ("wc -l people.csv", "3 people.csv"),
        ("head -n 2 people.csv", "name,age\nada,36"),
        ("sort -t, -k2 -n people.csv", "name,age\nada,36\nalan,41"),
        ("cut -d, -f1 people.csv", "name\nada\nalan"),
        ("grep -c a people.csv", "3"),
        ("seq -2 0", "-2\n-1\n0"),
        ("date -u +%Y -d 2020-01-01", "2020"),
        ("echo --not-an-option /etc/passwd", "--not-an-option /etc/passwd"),
    ] {
        let outcome = agent::exec::run(&arena.attacker, command, &Default::default(), Default::default(), &sandbox).await;
        let outcome = outcome.unwrap_or_else(|e| panic!("{command}: {e}"));
        assert_eq!(outcome.stdout.trim(), expected, "{command}: {outcome:?}");
    }
    let written =
        agent::exec::run(&arena.attacker, "sort -o sorted.csv people.csv", &Default::default(), Default::default(), &sandbox).await;
    assert!(written.unwrap().succeeded());
    assert!(arena.attacker.join("sorted.csv").exists());
}

#[tokio::test]
async fn a_fork_bomb_cannot_take_the_hosts_process_table() {
    assert!(agent::exec::pids::describe().contains("capped"), "scripts/test runs as root, where a pids cgroup is writable");
    let _counting = COUNTING.lock().await;
    let arena = Arena::new().unwrap();
    let before = process_count();
    let limits = agent::exec::ExecLimits { timeout: std::time::Duration::from_secs(3), ..Default::default() };
    let sandbox = Sandbox::default();
    let bomb = agent::exec::run(&arena.attacker, "bash -c ':(){ :|:& };:'", &agent::exec::ExecPolicy::Full, limits, &sandbox);
    let watch = async {
        let mut most = 0;
        for _ in 0..25 {
            most = most.max(process_count());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        most
    };
    let (outcome, most) = tokio::join!(bomb, watch);
    assert!(outcome.is_ok());
    assert!(most <= before + 100, "{before} processes before the fork bomb, {most} at its height");
    // Meanwhile the server can still start threads and processes.
    let echo = agent::exec::run(&arena.attacker, "echo alive", &Default::default(), Default::default(), &Sandbox::default()).await;
    assert_eq!(echo.unwrap().stdout, "alive\n");
}
