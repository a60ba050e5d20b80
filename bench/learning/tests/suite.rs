//! The committed task suite is well formed, and every task's check tells its known good
//! result from its known mistake and from doing nothing.

use std::collections::{BTreeMap, BTreeSet};

use learning::{load_suite, suite_dir, Split, Task};

fn suite() -> Vec<Task> {
    load_suite(&suite_dir()).expect("the task suite loads")
}

#[test]
fn the_suite_has_enough_tasks_and_families_with_both_splits() {
    let tasks = suite();
    assert!(tasks.len() >= 60, "only {} tasks", tasks.len());
    let mut families: BTreeMap<&str, BTreeMap<Split, usize>> = BTreeMap::new();
    for task in &tasks {
        *families.entry(task.family.as_str()).or_default().entry(task.split).or_default() += 1;
    }
    assert!(families.len() >= 8, "only {} families", families.len());
    for (family, splits) in &families {
        let train = splits.get(&Split::Train).copied().unwrap_or(0);
        let heldout = splits.get(&Split::Heldout).copied().unwrap_or(0);
        assert!(train >= 4 && heldout >= 3, "{family} has {train} train and {heldout} heldout tasks");
    }
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "tasks come sorted by id");
}

/// The file names and the requests of the tasks of one family and split.
#[derive(Default)]
struct Surface<'a> {
    files: BTreeSet<&'a str>,
    requests: BTreeSet<&'a str>,
}

#[test]
fn train_and_heldout_tasks_of_a_family_share_no_file_names_or_requests() {
    let tasks = suite();
    let mut seen: BTreeMap<(&str, Split), Surface> = BTreeMap::new();
    for task in &tasks {
        let surface = seen.entry((task.family.as_str(), task.split)).or_default();
        // Names are compared without their directories: a skill keyed on a file name
        // would otherwise carry over from train to heldout.
        surface.files.extend(task.files.keys().map(|path| path.rsplit('/').next().unwrap_or(path)));
        surface.requests.insert(task.request.as_str());
    }
    for ((family, split), train) in &seen {
        if *split != Split::Train {
            continue;
        }
        let heldout = &seen[&(*family, Split::Heldout)];
        let shared: Vec<_> = train.files.intersection(&heldout.files).collect();
        assert!(shared.is_empty(), "{family}: the file names {shared:?} are in both splits");
        assert!(train.requests.is_disjoint(&heldout.requests), "{family}: a request is in both splits");
    }
}

#[test]
fn every_solution_passes_and_every_mistake_fails() {
    for task in suite() {
        let dir = tempfile::tempdir().unwrap();
        task.materialize(dir.path()).unwrap();
        task.solution.apply(dir.path()).unwrap();
        let verdict = task.check(dir.path(), &task.solution.answer);
        assert!(verdict.passed, "{}: the solution fails: {}", task.id, verdict.detail);

        let dir = tempfile::tempdir().unwrap();
        task.materialize(dir.path()).unwrap();
        task.wrong.apply(dir.path()).unwrap();
        let verdict = task.check(dir.path(), &task.wrong.answer);
        assert!(!verdict.passed, "{}: the mistake passes: {}", task.id, verdict.detail);
    }
}

#[test]
fn doing_nothing_fails_every_task() {
    for task in suite() {
        let dir = tempfile::tempdir().unwrap();
        task.materialize(dir.path()).unwrap();
        let verdict = task.check(dir.path(), "");
        assert!(!verdict.passed, "{}: the untouched workspace passes: {}", task.id, verdict.detail);
    }
}

#[test]
fn fixtures_are_small_enough_to_read_whole() {
    for task in suite() {
        for (path, content) in &task.files {
            let lines = content.lines().count();
            assert!((1..=25).contains(&lines), "{}: {path} has {lines} lines", task.id);
        }
    }
}
