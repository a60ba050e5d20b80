//! What the commands in a skill do. Every command found in the skill is parsed and its
//! program identified (after `sudo`, `env`, `xargs` and the like); the analysis then asks
//! two questions of the skill as a whole:
//!
//! * Does it run downloaded code? Output piped from a download into an interpreter, a
//!   download inside `$( … )` or `<( … )` handed to one, interpreter code that both fetches
//!   and evaluates, or a download anywhere in the skill and a file run anywhere in it. The
//!   last is judged over all the skill's code blocks and sentences together, because
//!   colluding authors split the two halves apart, and because a shared skill never needs
//!   to run downloaded code, it errs on the side of refusing.
//! * Does it delete or overwrite anything outside the workspace? Relative paths that stay
//!   inside the workspace are fine; absolute paths, the home directory and paths that
//!   climb out with `..` are not.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use regex::Regex;

use super::extract::Document;
use super::shell::{self, Command, Redirect, Script};

/// How deep command strings handed to `sh -c` or `eval` are parsed again.
const MAX_DEPTH: usize = 6;

/// An excerpt for each rule the commands break.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub remote_code: Option<String>,
    pub destructive: Option<String>,
}

/// Analyzes every command in a skill.
pub fn analyze(doc: &Document) -> Verdict {
    let scripts: Vec<(Script, bool)> = doc.snippets.iter().map(|s| (shell::parse(&s.text), s.prose)).collect();
    // Variables are assigned in one place and used in another, possibly in an earlier code
    // block, so the analysis repeats until it learns no new variables.
    let mut tainted = HashSet::new();
    let mut literals = HashMap::new();
    let mut facts = Facts::default();
    for _ in 0..4 {
        facts = Facts::default();
        for (script, prose) in &scripts {
            let ctx = Ctx { prose: *prose, tainted: &tainted, literals: &literals, depth: 0 };
            analyze_script(script, &ctx, &mut facts);
        }
        let learned = facts.tainted.iter().any(|v| !tainted.contains(v)) || facts.literals.iter().any(|(k, v)| literals.get(k) != Some(v));
        if !learned {
            break;
        }
        tainted.extend(facts.tainted.drain());
        literals.extend(facts.literals.drain());
    }
    for (lang, body) in &doc.code_blocks {
        if !SHELL_LANGUAGES.contains(&lang.as_str()) {
            if let Some(line) = fetches_and_evaluates(body) {
                facts.remote.get_or_insert(shorten(&line, 80));
            }
        }
    }
    facts.verdict()
}

/// Info strings of fenced blocks that hold shell commands; other blocks are program code.
const SHELL_LANGUAGES: &[&str] = &[
    "",
    "sh",
    "bash",
    "shell",
    "console",
    "zsh",
    "fish",
    "ksh",
    "terminal",
    "shellsession",
    "shell-session",
    "sh-session",
    "text",
    "txt",
    "plaintext",
];

/// What the analysis knows while it walks one piece of command text.
struct Ctx<'a> {
    /// The text came from the middle of a prose sentence.
    prose: bool,
    /// Variables that hold downloaded content.
    tainted: &'a HashSet<String>,
    /// Variables assigned a plain word, so that `$SUDO rm -rf "$D"` reads as what it runs.
    literals: &'a HashMap<String, String>,
    depth: usize,
}

impl Ctx<'_> {
    fn deeper(&self) -> Option<Ctx<'_>> {
        (self.depth < MAX_DEPTH).then(|| Ctx { prose: self.prose, tainted: self.tainted, literals: self.literals, depth: self.depth + 1 })
    }
}

/// Something downloaded, and the files it was saved as.
#[derive(Debug)]
struct Download {
    excerpt: String,
    outputs: Vec<String>,
    /// Files with names the analysis cannot know were written (an archive unpacked, a
    /// recursive download, a script's own file handling).
    any_file: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExecKind {
    /// A file run by path or handed to an interpreter. A system program (`/usr/bin/…`)
    /// and a path that names data (`out/summary.csv` in a sentence) count only when they
    /// were themselves downloaded.
    Path { only_if_downloaded: bool },
    /// A command found on `PATH`, which counts only when a download was saved under its name.
    Bare,
    /// A build tool that runs the files in the current directory, which counts when
    /// files were downloaded (a cloned repository's Makefile).
    Runner,
}

#[derive(Debug)]
struct Execution {
    excerpt: String,
    target: String,
    kind: ExecKind,
}

#[derive(Debug, Default)]
struct Facts {
    downloads: Vec<Download>,
    executions: Vec<Execution>,
    remote: Option<String>,
    destructive: Option<String>,
    tainted: HashSet<String>,
    literals: HashMap<String, String>,
}

impl Facts {
    fn remote(&mut self, excerpt: &str) {
        self.remote.get_or_insert_with(|| shorten(excerpt, 80));
    }

    fn destructive(&mut self, excerpt: &str) {
        self.destructive.get_or_insert_with(|| shorten(excerpt, 80));
    }

    fn verdict(self) -> Verdict {
        let remote_code = self.remote.clone().or_else(|| self.download_then_run());
        Verdict { remote_code, destructive: self.destructive }
    }

    /// A download anywhere and a run anywhere. A run of the downloaded file itself is
    /// reported first, since its excerpt shows the whole story.
    fn download_then_run(&self) -> Option<String> {
        let first = self.downloads.first()?;
        let pair = |d: &Download, e: &Execution| {
            if d.excerpt == e.excerpt {
                shorten(&e.excerpt, 80)
            } else {
                let download = shorten(&d.excerpt, 44);
                format!("{} … {}", download.trim_end_matches('…'), shorten(&e.excerpt, 32))
            }
        };
        // `/` or `..` quoted in a sentence is no program.
        let executions = self.executions.iter().filter(|e| e.target.chars().any(char::is_alphanumeric));
        for e in executions.clone() {
            if let Some(d) = self.downloads.iter().find(|d| d.outputs.iter().any(|o| same_file(o, &e.target, e.kind))) {
                return Some(pair(d, e));
            }
        }
        let files = self.downloads.iter().any(|d| !d.outputs.is_empty() || d.any_file);
        let counts = |e: &&Execution| match e.kind {
            ExecKind::Path { only_if_downloaded } => !only_if_downloaded,
            ExecKind::Bare => false,
            ExecKind::Runner => files,
        };
        executions.clone().find(counts).map(|e| pair(first, e))
    }
}

/// Whether running `target` runs the downloaded `output`.
fn same_file(output: &str, target: &str, kind: ExecKind) -> bool {
    let output = normalize(output);
    let target = normalize(target);
    if output.is_empty() || target.is_empty() {
        return false;
    }
    match kind {
        ExecKind::Bare => target == output || output.ends_with(&format!("/{target}")),
        ExecKind::Path { .. } => target == output || target.starts_with(&format!("{output}/")) || basename(&target) == basename(&output),
        ExecKind::Runner => false,
    }
}

fn normalize(path: &str) -> String {
    let mut p = path.trim();
    while let Some(rest) = p.strip_prefix("./") {
        p = rest;
    }
    p.trim_end_matches('/').to_string()
}

fn basename(word: &str) -> &str {
    word.rsplit('/').next().unwrap_or(word)
}

fn shorten(text: &str, max: usize) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.chars().count() <= max {
        text
    } else {
        text.chars().take(max.saturating_sub(1)).chain(['…']).collect()
    }
}

fn analyze_script(script: &Script, ctx: &Ctx, facts: &mut Facts) {
    for pipeline in &script.pipelines {
        let text = pipeline.text();
        let mut upstream = Upstream::default();
        for command in &pipeline.stages {
            let stage = analyze_command(command, &upstream, &text, script, ctx, facts);
            if upstream.download && (!stage.writes.is_empty() || stage.extracts) {
                facts.downloads.push(Download { excerpt: text.clone(), outputs: stage.writes.clone(), any_file: stage.extracts });
            }
            upstream.download |= stage.feeds_download;
            upstream.outside |= stage.outside;
            upstream.files.extend(stage.files);
        }
    }
    // Substituted commands run as well.
    for substitution in &script.substitutions {
        analyze_script(&substitution.script, ctx, facts);
    }
}

/// What the earlier stages of a pipeline send down it.
#[derive(Debug, Default)]
struct Upstream {
    /// Downloaded content.
    download: bool,
    /// Paths outside the workspace, which `xargs rm` would receive.
    outside: bool,
    /// Files the earlier stages read, which an interpreter at the end would run.
    files: Vec<String>,
}

/// What one stage adds to its pipeline.
#[derive(Debug, Default)]
struct Stage {
    feeds_download: bool,
    outside: bool,
    files: Vec<String>,
    writes: Vec<String>,
    extracts: bool,
}

/// A simple command after its prefixes (`sudo`, `env X=1`, `xargs` …) are taken off.
#[derive(Debug, Default)]
struct Invocation {
    words: Vec<String>,
    assignments: Vec<(String, String)>,
    via_xargs: bool,
}

impl Invocation {
    fn program(&self) -> Option<&str> {
        self.words.first().map(|w| basename(w))
    }

    fn args(&self) -> &[String] {
        self.words.get(1..).unwrap_or_default()
    }
}

fn analyze_command(command: &Command, upstream: &Upstream, pipeline: &str, script: &Script, ctx: &Ctx, facts: &mut Facts) -> Stage {
    let raw = invocation(&command.words);
    let inv = resolve(raw.words.clone(), raw.assignments.clone(), raw.via_xargs, script, ctx);
    for (name, value) in &inv.assignments {
        if refs_download(value, script, ctx) {
            facts.tainted.insert(name.clone());
        } else if shell::substitutions_in(value).is_empty() && !value.is_empty() && !value.contains(char::is_whitespace) {
            facts.literals.insert(name.clone(), value.clone());
        }
    }
    let mut stage = Stage {
        feeds_download: command.words.iter().chain(command.redirects.iter().map(|r| &r.target)).any(|w| refs_download(w, script, ctx)),
        writes: written_files(&command.redirects),
        ..Stage::default()
    };
    if command.redirects.iter().any(|r| r.writes() && !harmless_device(&r.target) && outside_word(&r.target, script)) {
        facts.destructive(&command.text);
    }
    // `$(curl …)` as the command runs what was downloaded.
    if raw.words.first().is_some_and(|w| refs_download(w, script, ctx)) {
        facts.remote(&command.text);
    }
    let Some(program) = inv.program().map(str::to_string) else { return stage };
    let args = inv.args();
    if let Some(download) = download(&program, args, &command.redirects, &command.text, ctx) {
        stage.feeds_download = true;
        facts.downloads.push(download);
    }
    if interpreter(&program).is_some_and(|i| i.shell) && command.redirects.iter().any(|r| network_device(&r.target)) {
        // `bash -i >& /dev/tcp/host/port`: a shell driven from the network.
        facts.remote(&command.text);
    }
    if program == "tee" {
        stage.writes.extend(parse_args(args, "", &[]).operands.into_iter().filter(|t| !harmless_device(t)));
    }
    stage.outside = args.iter().any(|a| !a.starts_with('-') && outside_word(a, script));
    stage.files = args.iter().filter(|a| !a.starts_with('-') && shell::substitutions_in(a).is_empty()).cloned().collect();
    stage.files.extend(command.redirects.iter().filter(|r| r.reads_file()).map(|r| r.target.clone()));
    stage.extracts = matches!(program.as_str(), "tar" | "bsdtar" | "unzip" | "cpio" | "7z" | "unxz" | "bunzip2");

    let at = Place { command, upstream, pipeline, script };
    runs_code(&program, &inv, &at, ctx, facts);
    if destroys(&program, args, &inv, upstream, script, ctx) {
        let excerpt = if inv.via_xargs { pipeline } else { &command.text };
        facts.destructive(excerpt);
    }
    if program == "find" {
        // The commands `find` runs on what it finds are commands too.
        let (_, expression) = find_parts(args);
        for words in find_exec_commands(&expression) {
            let found = Command { text: command.text.clone(), words, redirects: Vec::new() };
            analyze_command(&found, &Upstream::default(), pipeline, script, ctx, facts);
        }
    }
    stage
}

/// Files a command's redirections write, leaving out `/dev/null` and its kind.
fn written_files(redirects: &[Redirect]) -> Vec<String> {
    redirects.iter().filter(|r| r.writes() && !harmless_device(&r.target)).map(|r| r.target.clone()).collect()
}

fn harmless_device(target: &str) -> bool {
    matches!(target, "/dev/null" | "/dev/stdout" | "/dev/stderr" | "/dev/tty" | "-")
        || target.starts_with("/dev/fd/")
        || target.starts_with("/proc/self/fd/")
        || target.chars().all(|c| c.is_ascii_digit())
}

/// Bash's network files, `/dev/tcp/host/port` and `/dev/udp/host/port`.
fn network_device(target: &str) -> bool {
    target.starts_with("/dev/tcp/") || target.starts_with("/dev/udp/")
}

// ---------------------------------------------------------------------------------------
// Taking a command apart
// ---------------------------------------------------------------------------------------

/// Takes off the words that run the real command: keywords, `sudo`, `env`, `nohup`,
/// `command`, `exec`, `time`, `xargs` and the like, and leading `VAR=value` assignments.
fn invocation(words: &[String]) -> Invocation {
    let mut words = words.to_vec();
    let mut inv = Invocation::default();
    let mut i = 0;
    while let Some(word) = words.get(i).cloned() {
        if let Some((name, value)) = assignment(&word) {
            inv.assignments.push((name, value));
            i += 1;
            continue;
        }
        i = match basename(&word) {
            "!" | "{" | "}" | "(" | ")" | "then" | "do" | "else" | "elif" | "if" | "while" | "until" | "fi" | "done" | "esac" | "nohup"
            | "builtin" | "setsid" | "unbuffer" | "export" | "local" | "declare" | "typeset" | "readonly" | "busybox" | "noglob" => i + 1,
            "sudo" | "doas" => {
                skip_options(&words, i + 1, "ugpChDrtUT", &["user", "group", "prompt", "close-from", "chdir", "host", "role", "type"])
            }
            "env" => {
                let end = skip_options(&words, i + 1, "uCS", &["unset", "chdir", "split-string"]);
                // `env -S "prog args"` splits its string into the command.
                let split = words[i + 1..end].iter().position(|w| w == "-S" || w == "--split-string");
                if let Some(value) = split.and_then(|p| words.get(i + 2 + p)).cloned() {
                    let parts = shell_words::split(&value).unwrap_or_else(|_| value.split_whitespace().map(str::to_string).collect());
                    words.splice(end..end, parts);
                }
                end
            }
            "command" => {
                // `command -v prog` only looks the program up.
                if words.get(i + 1).is_some_and(|w| w == "-v" || w == "-V") {
                    return Invocation::default();
                }
                skip_options(&words, i + 1, "", &[])
            }
            "exec" => skip_options(&words, i + 1, "a", &[]),
            "time" => skip_options(&words, i + 1, "fo", &["format", "output"]),
            "nice" => skip_options(&words, i + 1, "n", &["adjustment"]),
            "ionice" => skip_options(&words, i + 1, "cnp", &["class", "classdata", "pid"]),
            "stdbuf" => skip_options(&words, i + 1, "ioe", &["input", "output", "error"]),
            "watch" => skip_options(&words, i + 1, "nd", &["interval"]),
            // These take one operand (a duration, a directory) before the command.
            "timeout" => skip_options(&words, i + 1, "sk", &["signal", "kill-after"]) + 1,
            "chroot" => skip_options(&words, i + 1, "", &["userspec", "groups"]) + 1,
            "xargs" => {
                inv.via_xargs = true;
                let values =
                    ["arg-file", "delimiter", "eof", "replace", "max-lines", "max-args", "max-procs", "max-chars", "process-slot-var"];
                skip_options(&words, i + 1, "adEILnPs", &values)
            }
            _ => break,
        };
    }
    inv.words = words.split_off(i.min(words.len()));
    inv
}

/// Resolves a command word that is a variable (`$CURL`) or a substitution (`$(which
/// curl)`), expands variables assigned plain words, and in prose trims the punctuation of
/// the sentence around the command.
fn resolve(mut words: Vec<String>, mut assignments: Vec<(String, String)>, mut via_xargs: bool, script: &Script, ctx: &Ctx) -> Invocation {
    for _ in 0..3 {
        let Some(first) = words.first() else { break };
        let replacement = if shell::is_whole_substitution(first) {
            let index = shell::substitutions_in(first)[0];
            let inner = script.substitutions.get(index).and_then(|s| s.script.pipelines.last()).and_then(|p| p.stages.last());
            inner.and_then(|c| c.words.last()).cloned()
        } else {
            variable_name(first).and_then(|v| ctx.literals.get(v)).cloned()
        };
        let Some(replacement) = replacement else { break };
        words[0] = replacement;
        let again = invocation(&words);
        assignments.extend(again.assignments);
        via_xargs |= again.via_xargs;
        words = again.words;
    }
    for word in words.iter_mut().skip(1) {
        *word = expand_literals(word, ctx.literals);
        if ctx.prose {
            *word = trim_sentence_punctuation(word);
        }
    }
    Invocation { words, assignments, via_xargs }
}

fn trim_sentence_punctuation(word: &str) -> String {
    let mut w = word;
    if w.len() > 1 && !w.chars().all(|c| c == '.') {
        w = w.strip_suffix(['.', ',', ';', ':', '!', '?']).unwrap_or(w);
    }
    if w.ends_with(')') && !w.contains('(') {
        w = &w[..w.len() - 1];
    }
    w.to_string()
}

/// `NAME=value` or `NAME+=value`.
fn assignment(word: &str) -> Option<(String, String)> {
    let (name, value) = word.split_once('=')?;
    let name = name.strip_suffix('+').unwrap_or(name);
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    valid.then(|| (name.to_string(), value.to_string()))
}

/// The variable a word consists of, as in `$NAME` or `${NAME}`.
fn variable_name(word: &str) -> Option<&str> {
    let name = word.strip_prefix("${").and_then(|w| w.strip_suffix('}')).or_else(|| word.strip_prefix('$'))?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
}

/// The variables a word uses.
fn variables_in(word: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = word;
    while let Some(start) = rest.find('$') {
        let after = &rest[start + 1..];
        let braced = after.strip_prefix('{');
        let body = braced.unwrap_or(after);
        let len = body.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(body.len());
        if len > 0 {
            found.push(&body[..len]);
        }
        rest = &body[len..];
    }
    found
}

fn expand_literals(word: &str, literals: &HashMap<String, String>) -> String {
    if !word.contains('$') || literals.is_empty() {
        return word.to_string();
    }
    let mut out = word.to_string();
    for name in variables_in(word) {
        if let Some(value) = literals.get(name) {
            out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
        }
    }
    out
}

/// Index of the first word after the options at `start`, given the options that take a
/// value (short letters and long names).
fn skip_options(words: &[String], start: usize, short_values: &str, long_values: &[&str]) -> usize {
    let mut i = start;
    while let Some(w) = words.get(i) {
        if w == "--" {
            return i + 1;
        }
        if !w.starts_with('-') || w == "-" {
            return i;
        }
        if let Some(long) = w.strip_prefix("--") {
            i += if !long.contains('=') && long_values.contains(&long) { 2 } else { 1 };
            continue;
        }
        let cluster = &w[1..];
        let takes_value = cluster.char_indices().find(|(_, c)| short_values.contains(*c));
        i += match takes_value {
            Some((k, c)) if k + c.len_utf8() == cluster.len() => 2,
            _ => 1,
        };
    }
    i
}

/// A command's arguments, split the way GNU `getopt` does: options may come after
/// operands, `--` ends them, and a short option that takes a value takes the rest of its
/// cluster or the next argument.
#[derive(Debug, Default)]
struct Args {
    opts: Vec<(String, Option<String>)>,
    operands: Vec<String>,
}

impl Args {
    fn has(&self, names: &[&str]) -> bool {
        self.opts.iter().any(|(o, _)| names.contains(&o.as_str()))
    }

    fn values(&self, names: &[&str]) -> Vec<String> {
        self.opts.iter().filter(|(o, _)| names.contains(&o.as_str())).filter_map(|(_, v)| v.clone()).collect()
    }
}

fn parse_args(args: &[String], short_values: &str, long_values: &[&str]) -> Args {
    let mut parsed = Args::default();
    let mut ended = false;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if ended || a == "-" || !a.starts_with('-') {
            parsed.operands.push(a.clone());
            continue;
        }
        if a == "--" {
            ended = true;
            continue;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None if long_values.contains(&long) => {
                    i += 1;
                    (long, args.get(i - 1).cloned())
                }
                None => (long, None),
            };
            parsed.opts.push((format!("--{name}"), value));
            continue;
        }
        let cluster: Vec<char> = a[1..].chars().collect();
        for (k, c) in cluster.iter().enumerate() {
            if short_values.contains(*c) {
                let rest: String = cluster[k + 1..].iter().collect();
                let value = if rest.is_empty() {
                    i += 1;
                    args.get(i - 1).cloned()
                } else {
                    Some(rest)
                };
                parsed.opts.push((format!("-{c}"), value));
                break;
            }
            parsed.opts.push((format!("-{c}"), None));
        }
    }
    parsed
}

// ---------------------------------------------------------------------------------------
// Downloads
// ---------------------------------------------------------------------------------------

/// What a downloading command fetches and where it saves it.
#[derive(Debug, Default)]
struct Fetch {
    targets: Vec<String>,
    outputs: Vec<String>,
    any_file: bool,
}

/// The download a command makes, if it makes one.
fn download(program: &str, args: &[String], redirects: &[Redirect], excerpt: &str, ctx: &Ctx) -> Option<Download> {
    let fetch = match program {
        "curl" | "curlie" => Some(curl(args)),
        "wget" | "wget2" => Some(wget(args)),
        "aria2c" | "axel" | "fetch" => Some(simple_download(args)),
        "http" | "https" | "xh" | "xhs" => Some(httpie(args)),
        "nc" | "ncat" | "netcat" => netcat(args),
        "git" => git_clone(args),
        "gh" => gh(args),
        "hg" | "svn" => other_vcs(args),
        "scp" | "rsync" | "sftp" => copy_from_host(program, args),
        _ => None,
    };
    // Reading bash's network files is a download whatever the program.
    let fetch = fetch.or_else(|| {
        let device = redirects.iter().filter(|r| r.reads_file()).map(|r| &r.target).chain(args).find(|t| network_device(t))?;
        Some(Fetch { targets: vec![device.clone()], ..Fetch::default() })
    })?;
    if !fetch.targets.iter().any(|t| real_target(t, ctx)) {
        return None;
    }
    let mut outputs = fetch.outputs;
    outputs.extend(written_files(redirects));
    Some(Download { excerpt: excerpt.to_string(), outputs, any_file: fetch.any_file })
}

/// A target that names something to fetch, not a placeholder like `curl ... | sh` in a
/// warning. Prose asks for a URL, since the words after "curl" may be plain English.
fn real_target(target: &str, ctx: &Ctx) -> bool {
    let placeholder = target.chars().all(|c| c == '.' || c == '…');
    !placeholder && (!ctx.prose || url_like(target))
}

fn url_like(target: &str) -> bool {
    target.contains("://")
        || target.starts_with('$')
        || target.starts_with("www.")
        || !shell::substitutions_in(target).is_empty()
        || remote_host_path(target)
        || network_device(target)
}

/// `host:path` or `user@host:path`, the way `scp` and `rsync` name remote files.
fn remote_host_path(word: &str) -> bool {
    if word.contains("://") {
        return true;
    }
    match word.split_once(':') {
        Some((host, _)) => !host.is_empty() && !host.contains('/') && !host.starts_with('-') && (host.contains('.') || host.contains('@')),
        None => false,
    }
}

/// The names a download of `url` is saved under when no name is given: the last part of
/// its path, with and without a query string, or `index.html`.
fn url_file_names(url: &str) -> Vec<String> {
    let without_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = without_scheme.split_once('/').map_or("", |(_, p)| p);
    let with_query = path.rsplit('/').next().unwrap_or("");
    let name = with_query.split(['?', '#']).next().unwrap_or("");
    if name.is_empty() {
        return vec!["index.html".to_string()];
    }
    let mut names = vec![name.to_string()];
    if with_query != name {
        names.push(with_query.to_string());
    }
    names
}

fn in_directory(dirs: &[String], names: &[String]) -> Vec<String> {
    dirs.iter().flat_map(|d| names.iter().map(move |n| format!("{}/{n}", d.trim_end_matches('/')))).collect()
}

fn curl(args: &[String]) -> Fetch {
    let long = [
        "output",
        "header",
        "data",
        "data-raw",
        "data-binary",
        "data-urlencode",
        "request",
        "user",
        "user-agent",
        "referer",
        "cookie",
        "cookie-jar",
        "output-dir",
        "upload-file",
        "form",
        "form-string",
        "max-time",
        "connect-timeout",
        "proxy",
        "write-out",
        "retry",
        "cacert",
        "cert",
        "key",
        "range",
        "config",
        "url",
        "continue-at",
        "dump-header",
        "resolve",
        "interface",
        "oauth2-bearer",
        "limit-rate",
        "max-filesize",
    ];
    let p = parse_args(args, "AbcCdDeEFHKmoPQrtTuUwxXyYz", &long);
    let mut targets = p.operands.clone();
    targets.extend(p.values(&["--url"]));
    let mut outputs: Vec<String> = p.values(&["-o", "--output"]).into_iter().filter(|o| o != "-").collect();
    if p.has(&["-O", "--remote-name", "--remote-name-all"]) {
        outputs.extend(targets.iter().flat_map(|t| url_file_names(t)));
    }
    let dirs = p.values(&["--output-dir"]);
    outputs.extend(in_directory(&dirs, &outputs.clone()));
    Fetch { targets, outputs, any_file: p.has(&["-J", "--remote-header-name"]) }
}

fn wget(args: &[String]) -> Fetch {
    let long = [
        "output-document",
        "output-file",
        "append-output",
        "execute",
        "input-file",
        "base",
        "tries",
        "timeout",
        "wait",
        "quota",
        "directory-prefix",
        "user-agent",
        "level",
        "accept",
        "reject",
        "domains",
        "include-directories",
        "exclude-directories",
        "header",
        "post-data",
        "post-file",
        "user",
        "password",
        "http-user",
        "http-password",
        "referer",
        "load-cookies",
        "save-cookies",
    ];
    let p = parse_args(args, "oaeiBtOTwQPUlARDIX", &long);
    let mut targets = p.operands.clone();
    let lists = p.values(&["-i", "--input-file"]);
    targets.extend(lists.iter().cloned());
    let mut outputs: Vec<String> = match p.values(&["-O", "--output-document"]).first() {
        Some(o) if o == "-" => Vec::new(),
        Some(o) => vec![o.clone()],
        None => p.operands.iter().flat_map(|t| url_file_names(t)).collect(),
    };
    let dirs = p.values(&["-P", "--directory-prefix"]);
    outputs.extend(in_directory(&dirs, &outputs.clone()));
    let any_file = !lists.is_empty() || p.has(&["-r", "--recursive", "-m", "--mirror"]);
    Fetch { targets, outputs, any_file }
}

/// `aria2c`, `axel` and BSD `fetch`: `-o NAME`, or the URL's own name.
fn simple_download(args: &[String]) -> Fetch {
    let p = parse_args(args, "odxsjinHTNU", &["out", "output", "dir", "input-file", "header", "user-agent"]);
    let named: Vec<String> = p.values(&["-o", "--out", "--output"]).into_iter().filter(|o| o != "-").collect();
    let mut outputs = if named.is_empty() { p.operands.iter().flat_map(|t| url_file_names(t)).collect() } else { named };
    let dirs = p.values(&["-d", "--dir"]);
    outputs.extend(in_directory(&dirs, &outputs.clone()));
    let lists = p.values(&["-i", "--input-file"]);
    let mut targets = p.operands;
    targets.extend(lists.iter().cloned());
    Fetch { targets, outputs, any_file: !lists.is_empty() }
}

/// HTTPie and its kin: `http [METHOD] URL [items]`, saving a file with `--download`.
fn httpie(args: &[String]) -> Fetch {
    let p =
        parse_args(args, "oaA", &["output", "auth", "auth-type", "session", "session-read-only", "verify", "cert", "cert-key", "proxy"]);
    let is_item = |w: &str| !w.contains("://") && (w.contains('=') || w.contains(':') && !w.starts_with(':'));
    let is_method = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase());
    let targets: Vec<String> = p.operands.iter().filter(|w| !is_item(w) && !is_method(w)).cloned().collect();
    let downloads = p.has(&["-d", "--download"]);
    let outputs = if downloads { p.values(&["-o", "--output"]) } else { Vec::new() };
    Fetch { any_file: downloads && outputs.is_empty(), targets, outputs }
}

/// `nc host port` reads from the network; `nc -z` only probes a port.
fn netcat(args: &[String]) -> Option<Fetch> {
    let p = parse_args(args, "pswiqWxIOTVX", &["source-port", "wait", "proxy", "exec", "sh-exec"]);
    if p.has(&["-z"]) {
        return None;
    }
    let listens = p.has(&["-l", "--listen"]);
    let mut targets = p.operands;
    if listens {
        targets.push("listen".to_string());
    }
    Some(Fetch { targets, ..Fetch::default() })
}

fn git_clone(args: &[String]) -> Option<Fetch> {
    let start = skip_options(args, 0, "Cc", &["git-dir", "work-tree", "namespace", "exec-path", "config-env"]);
    if args.get(start).map(String::as_str) != Some("clone") {
        return None;
    }
    let long = [
        "origin",
        "branch",
        "config",
        "depth",
        "reference",
        "reference-if-able",
        "separate-git-dir",
        "template",
        "filter",
        "jobs",
        "upload-pack",
        "shallow-since",
        "shallow-exclude",
        "bundle-uri",
        "server-option",
    ];
    let p = parse_args(&args[start + 1..], "obcju", &long);
    Some(clone_of(p.operands))
}

/// A repository cloned into its second operand or into the last part of its URL.
fn clone_of(operands: Vec<String>) -> Fetch {
    let repo = operands.first().cloned().unwrap_or_default();
    let dir = operands.get(1).cloned().unwrap_or_else(|| {
        let last = repo.trim_end_matches('/').rsplit(['/', ':']).next().unwrap_or("");
        last.strip_suffix(".git").unwrap_or(last).to_string()
    });
    Fetch { targets: vec![repo], outputs: vec![dir], any_file: true }
}

/// GitHub's CLI: `gh repo clone`, `gh gist clone`, `gh release download`.
fn gh(args: &[String]) -> Option<Fetch> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["repo" | "gist", "clone", rest @ ..] => {
            let p = parse_args(&rest.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "u", &["upstream-remote-name"]);
            Some(clone_of(p.operands))
        }
        ["release", "download", rest @ ..] => {
            Some(Fetch { targets: rest.iter().map(|s| s.to_string()).collect(), outputs: Vec::new(), any_file: true })
        }
        _ => None,
    }
}

/// `hg clone URL [DIR]` and `svn checkout|co|export URL [DIR]`.
fn other_vcs(args: &[String]) -> Option<Fetch> {
    let sub = args.first()?;
    if !matches!(sub.as_str(), "clone" | "checkout" | "co" | "export") {
        return None;
    }
    let p = parse_args(&args[1..], "ru", &["rev", "revision", "username", "password", "depth"]);
    Some(clone_of(p.operands))
}

/// `scp host:file dest`, `rsync host:dir/ dest`, `sftp host:file`.
fn copy_from_host(program: &str, args: &[String]) -> Option<Fetch> {
    let (short, long): (&str, &[&str]) = match program {
        "rsync" => ("efBTM", &RSYNC_VALUES),
        _ => ("cFiJloPSBs", &[]),
    };
    let mut operands = parse_args(args, short, long).operands;
    if program == "sftp" && operands.len() == 1 {
        operands.push(".".to_string());
    }
    let (dest, sources) = operands.split_last()?;
    let remote: Vec<&String> = sources.iter().filter(|s| remote_host_path(s)).collect();
    if remote.is_empty() || remote_host_path(dest) {
        return None;
    }
    let names: Vec<String> =
        remote.iter().map(|s| basename(s.trim_end_matches('/')).rsplit(':').next().unwrap_or("").to_string()).collect();
    let mut outputs = vec![dest.clone()];
    outputs.extend(in_directory(std::slice::from_ref(dest), &names));
    outputs.extend(names);
    Some(Fetch { targets: remote.into_iter().cloned().collect(), outputs, any_file: true })
}

const RSYNC_VALUES: [&str; 24] = [
    "rsh",
    "exclude",
    "include",
    "filter",
    "port",
    "password-file",
    "files-from",
    "log-file",
    "temp-dir",
    "partial-dir",
    "backup-dir",
    "suffix",
    "chmod",
    "chown",
    "timeout",
    "bwlimit",
    "exclude-from",
    "include-from",
    "compare-dest",
    "copy-dest",
    "link-dest",
    "rsync-path",
    "out-format",
    "log-file-format",
];

// ---------------------------------------------------------------------------------------
// Running code
// ---------------------------------------------------------------------------------------

/// How an interpreter takes its program: letters of the options whose value is code, of
/// those that take some other value, and so on.
struct Interp {
    shell: bool,
    code: &'static str,
    code_long: &'static [&'static str],
    values: &'static str,
    values_long: &'static [&'static str],
    /// Options whose value, if any, is attached (`-i.bak`).
    attached: &'static str,
    /// Options that make the interpreter read its program from standard input.
    stdin: &'static str,
    /// The option that runs a module instead of a file (`python -m`).
    module: Option<char>,
    /// The option whose value is the program file (`php -f`).
    file: Option<char>,
}

const BASE: Interp =
    Interp { shell: false, code: "", code_long: &[], values: "", values_long: &[], attached: "", stdin: "", module: None, file: None };

fn interpreter(program: &str) -> Option<Interp> {
    // `python3.12`, `perl5.36` and `php8` are the interpreters they are versions of.
    let base = program.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match base {
        "sh" | "bash" | "zsh" | "dash" | "ksh" | "mksh" | "fish" | "ash" | "csh" | "tcsh" | "yash" | "posh" | "rbash" => Interp {
            shell: true,
            code: "c",
            code_long: &["command"],
            values: "oO",
            values_long: &["rcfile", "init-file"],
            stdin: "s",
            ..BASE
        },
        "python" | "pypy" => Interp { code: "c", values: "WXQ", module: Some('m'), ..BASE },
        "perl" => Interp { code: "eE", attached: "iIMmlx0dDC", ..BASE },
        "ruby" | "jruby" => Interp { code: "e", values: "rIC", attached: "x0iTWKFlE", ..BASE },
        "node" | "nodejs" => Interp {
            code: "ep",
            code_long: &["eval", "print"],
            values: "r",
            values_long: &["require", "import", "loader", "input-type"],
            ..BASE
        },
        "php" => Interp { code: "r", values: "cdz", file: Some('f'), ..BASE },
        "lua" | "luajit" => Interp { code: "e", values: "l", ..BASE },
        "Rscript" | "osascript" => Interp { code: "e", ..BASE },
        "tclsh" | "wish" => BASE,
        _ => return None,
    })
}

/// How an interpreter was asked to run something.
#[derive(Debug, Default)]
struct InterpUse {
    code: Vec<String>,
    script: Option<String>,
    stdin: bool,
    /// The module and its arguments, for `python -m pip install …`.
    module: Option<(String, Vec<String>)>,
}

fn interp_use(args: &[String], spec: &Interp) -> InterpUse {
    let mut found = InterpUse::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "-" {
            found.stdin = true;
            break;
        }
        if a == "--" {
            if found.code.is_empty() && !found.stdin {
                found.script = args.get(i + 1).cloned();
            }
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            let (name, value) = long.split_once('=').map_or((long, None), |(n, v)| (n, Some(v.to_string())));
            let takes = spec.code_long.contains(&name) || spec.values_long.contains(&name);
            let value = value.or_else(|| {
                if takes {
                    i += 1;
                }
                args.get(i).filter(|_| takes).cloned()
            });
            if spec.code_long.contains(&name) {
                found.code.extend(value);
            }
            i += 1;
            continue;
        }
        let option = a.starts_with('-') || (spec.shell && a.starts_with('+') && a.len() > 1);
        if option {
            let cluster: Vec<char> = a[1..].chars().collect();
            for (k, c) in cluster.iter().enumerate() {
                let rest: String = cluster[k + 1..].iter().collect();
                let mut value = || {
                    if rest.is_empty() {
                        i += 1;
                        args.get(i).cloned()
                    } else {
                        Some(rest.clone())
                    }
                };
                if spec.code.contains(*c) {
                    found.code.extend(value());
                    break;
                }
                if spec.module == Some(*c) {
                    let name = value().unwrap_or_default();
                    found.module = Some((name, args.get(i + 1..).unwrap_or_default().to_vec()));
                    return found;
                }
                if spec.file == Some(*c) {
                    found.script = value();
                    return found;
                }
                if spec.stdin.contains(*c) {
                    found.stdin = true;
                }
                if spec.values.contains(*c) {
                    value();
                    break;
                }
                if spec.attached.contains(*c) {
                    break;
                }
            }
            i += 1;
            continue;
        }
        // The first operand is the program file, unless the program came as code or from
        // standard input; then the operands are its arguments.
        if found.code.is_empty() && !found.stdin {
            found.script = Some(a.clone());
        }
        break;
    }
    if found.code.is_empty() && found.script.is_none() && found.module.is_none() {
        found.stdin = true;
    }
    found
}

fn stdin_path(path: &str) -> bool {
    matches!(path, "/dev/stdin" | "/dev/fd/0" | "/proc/self/fd/0")
}

static FETCHES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(urllib\d?|urlopen|urlretrieve|requests\s*\.\s*(get|post|request)|httpx|http\.client|aiohttp|pycurl|socket\s*\.\s*(socket|create_connection)|uri\s*\.\s*open|https?\s*\.\s*(get|request)|axios|xmlhttprequest|curl|wget|invoke-webrequest|invoke-restmethod|iwr|irm|downloadstring|downloadfile|webclient)\b|\bfetch\s*\(|lwp::|http::tiny|io::socket|net::http|open-uri",
    )
    .expect("the fetch pattern compiles")
});

static EVALUATES: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(exec|eval|execfile|system|popen|spawn\w*|subprocess|child_process|execsync|execfilesync|instance_eval|class_eval|iex|invoke-expression|runpy)\b|\bnew\s+function\b|\bFunction\s*\(|`",
    )
    .expect("the evaluation pattern compiles")
});

/// The line where program code both fetches from the network and evaluates or runs
/// something, as in `exec(urllib.request.urlopen(url).read())`.
fn fetches_and_evaluates(code: &str) -> Option<String> {
    if !FETCHES.is_match(code) {
        return None;
    }
    code.lines().find(|l| EVALUATES.is_match(l)).map(str::to_string)
}

/// Package managers, which run a package's install scripts when they install it.
const PACKAGE_MANAGERS: &[&str] = &[
    "pip", "pip3", "pipx", "uv", "uvx", "poetry", "conda", "mamba", "npm", "npx", "pnpm", "pnpx", "yarn", "bun", "bunx", "gem", "brew",
    "cargo", "composer", "rpm", "dnf", "yum", "zypper", "apt", "apt-get", "dpkg", "deno",
];

/// A package named by URL or repository rather than by a registry name.
fn remote_package(program: &str, arg: &str) -> bool {
    let arg = arg.split_once('=').filter(|_| arg.starts_with("--")).map_or(arg, |(_, v)| v);
    let vcs = ["git+", "hg+", "svn+", "bzr+", "git:", "github:", "gitlab:", "bitbucket:", "gist:"];
    if arg.contains("://") || vcs.iter().any(|p| arg.starts_with(p)) {
        return true;
    }
    // npm reads `owner/repo` as a GitHub repository.
    let npm_family = matches!(program, "npm" | "npx" | "pnpm" | "pnpx" | "yarn" | "bun" | "bunx");
    npm_family && !arg.starts_with(['@', '.', '/', '-', '~']) && arg.split('/').count() == 2 && !arg.ends_with('/')
}

/// Where a command stands: its pipeline, what flows into it, and the script whose
/// substitutions its words refer to.
struct Place<'a> {
    command: &'a Command,
    upstream: &'a Upstream,
    pipeline: &'a str,
    script: &'a Script,
}

fn runs_code(program: &str, inv: &Invocation, at: &Place, ctx: &Ctx, facts: &mut Facts) {
    let Place { command, script, .. } = *at;
    let args = inv.args();
    if PACKAGE_MANAGERS.contains(&program) && args.iter().any(|a| remote_package(program, a)) {
        facts.remote(&command.text);
        return;
    }
    let mut reads_stdin = false;
    if let Some(spec) = interpreter(program) {
        let usage = interp_use(args, &spec);
        if let Some((module, rest)) = &usage.module {
            let manager = module.as_str();
            if PACKAGE_MANAGERS.contains(&manager) && rest.iter().any(|a| remote_package(manager, a)) {
                facts.remote(&command.text);
            }
        }
        // Modules loaded by option (`perl -MLWP::Simple`, `ruby -ropen-uri`) fetch too.
        let whole = args.join(" ");
        for code in &usage.code {
            run_code(code, &whole, &spec, &command.text, script, ctx, facts);
        }
        if let Some(file) = &usage.script {
            reads_stdin |= run_file(file, &command.text, script, ctx, facts);
        }
        reads_stdin |= usage.stdin;
    } else {
        match program {
            "source" | "." => {
                if let Some(file) = args.first() {
                    reads_stdin |= run_file(file, &command.text, script, ctx, facts);
                }
            }
            "eval" => {
                let code = args.join(" ");
                run_code(&code, &code, &BASE_SHELL, &command.text, script, ctx, facts);
            }
            "deno" | "bun" => {
                if let Some(sub) = args.first() {
                    let p = parse_args(&args[1..], "", &[]);
                    if sub == "eval" {
                        if let Some(code) = p.operands.first() {
                            run_code(code, code, &interpreter("node").unwrap_or(BASE), &command.text, script, ctx, facts);
                        }
                    } else if let Some(file) = p.operands.first().filter(|_| matches!(sub.as_str(), "run" | "x" | "exec")) {
                        run_file(file, &command.text, script, ctx, facts);
                    } else if !sub.starts_with('-') && program == "bun" {
                        run_file(sub, &command.text, script, ctx, facts);
                    }
                }
            }
            _ => {}
        }
    }
    if reads_stdin {
        stdin_program(at, ctx, facts);
    }
    // The command word itself may be a file.
    if let Some(word) = inv.words.first().filter(|w| shell::substitutions_in(w).is_empty()) {
        let execution = if word.contains('/') {
            let only_if_downloaded = system_path(word) || data_file(word);
            Execution { excerpt: command.text.clone(), target: word.clone(), kind: ExecKind::Path { only_if_downloaded } }
        } else {
            Execution { excerpt: command.text.clone(), target: word.clone(), kind: ExecKind::Bare }
        };
        facts.executions.push(execution);
    }
    if program == "chmod" && makes_executable(args) {
        for target in chmod_targets(args) {
            facts.executions.push(exec_target(&target, &command.text, ctx));
        }
    }
    if matches!(program, "dpkg" | "rpm" | "apt" | "apt-get" | "dnf" | "yum" | "zypper") {
        // Installing a package file runs its maintainer scripts.
        let p = parse_args(args, "", &[]);
        for file in p.operands.iter().filter(|f| f.ends_with(".deb") || f.ends_with(".rpm")) {
            facts.executions.push(exec_target(file, &command.text, ctx));
        }
    }
    if !ctx.prose && runs_local_build(program, args) {
        facts.executions.push(Execution { excerpt: command.text.clone(), target: program.to_string(), kind: ExecKind::Runner });
    }
}

/// `eval` parses its arguments as shell code.
const BASE_SHELL: Interp = Interp { shell: true, ..BASE };

/// Code handed to an interpreter as an argument; `whole` is all its arguments, which
/// may load a networking module.
fn run_code(code: &str, whole: &str, spec: &Interp, excerpt: &str, script: &Script, ctx: &Ctx, facts: &mut Facts) {
    if refs_download(code, script, ctx) {
        facts.remote(excerpt);
        return;
    }
    if spec.shell {
        if let Some(deeper) = ctx.deeper() {
            analyze_script(&shell::parse(&unmark(code)), &deeper, facts);
        }
    } else if FETCHES.is_match(whole) && EVALUATES.is_match(code) {
        facts.remote(excerpt);
    } else if FETCHES.is_match(whole) {
        facts.downloads.push(Download { excerpt: excerpt.to_string(), outputs: Vec::new(), any_file: true });
    }
}

/// Substitution markers stand for text of the enclosing script; parsed again on their own
/// they would point at the wrong substitutions, so they become a plain word.
fn unmark(code: &str) -> String {
    let mut out = code.to_string();
    for index in shell::substitutions_in(code) {
        out = out.replace(&format!("\u{E000}{index}\u{E001}"), "SUBSTITUTION");
    }
    out
}

/// A program file handed to an interpreter. Returns whether it is standard input.
fn run_file(file: &str, excerpt: &str, script: &Script, ctx: &Ctx, facts: &mut Facts) -> bool {
    if refs_download(file, script, ctx) {
        facts.remote(excerpt);
        return false;
    }
    if stdin_path(file) {
        return true;
    }
    if shell::substitutions_in(file).is_empty() {
        facts.executions.push(exec_target(file, excerpt, ctx));
    }
    false
}

/// An interpreter that reads its program from standard input: whatever the pipeline or
/// a redirection feeds it is run.
fn stdin_program(at: &Place, ctx: &Ctx, facts: &mut Facts) {
    let Place { command, upstream, pipeline, script } = *at;
    if upstream.download {
        facts.remote(pipeline);
    }
    for r in &command.redirects {
        let feeds = r.reads_file() || r.op == "<<<";
        if feeds && (refs_download(&r.target, script, ctx) || network_device(&r.target)) {
            facts.remote(&command.text);
        } else if r.reads_file() {
            facts.executions.push(exec_target(&r.target, &command.text, ctx));
        }
    }
    for file in &upstream.files {
        facts.executions.push(exec_target(file, pipeline, ctx));
    }
}

fn exec_target(target: &str, excerpt: &str, ctx: &Ctx) -> Execution {
    let kind = if ctx.prose && !file_like(target) { ExecKind::Bare } else { ExecKind::Path { only_if_downloaded: system_path(target) } };
    Execution { excerpt: excerpt.to_string(), target: target.to_string(), kind }
}

/// Looks like a file name rather than an English word: has a directory or an extension.
fn file_like(word: &str) -> bool {
    word.contains('/')
        || word
            .rsplit_once('.')
            .is_some_and(|(stem, ext)| !stem.is_empty() && (1..=5).contains(&ext.len()) && ext.chars().all(|c| c.is_ascii_alphanumeric()))
}

/// Whether a path names data rather than a program, by its extension.
fn data_file(path: &str) -> bool {
    const DATA: &[&str] = &[
        "txt", "csv", "tsv", "json", "jsonl", "md", "yaml", "yml", "toml", "ini", "cfg", "conf", "log", "xml", "html", "pdf", "png", "jpg",
        "jpeg", "gif", "svg", "lock", "tmp", "bak", "gz", "tgz", "zip", "tar", "parquet", "sqlite", "db",
    ];
    basename(path).rsplit_once('.').is_some_and(|(stem, ext)| !stem.is_empty() && DATA.contains(&ext.to_ascii_lowercase().as_str()))
}

/// A program installed with the system, not one a skill could have put there.
fn system_path(path: &str) -> bool {
    ["/bin/", "/usr/bin/", "/sbin/", "/usr/sbin/"].iter().any(|p| path.starts_with(p))
}

fn makes_executable(args: &[String]) -> bool {
    args.iter().any(|a| {
        let symbolic = a.contains('+') && a.rsplit('+').next().is_some_and(|perm| perm.contains('x'));
        let octal = (3..=4).contains(&a.len())
            && a.chars().all(|c| ('0'..='7').contains(&c))
            && a.chars().any(|c| matches!(c, '1' | '3' | '5' | '7'));
        symbolic || octal
    })
}

/// Build tools and package scripts that run the code in the current directory.
fn runs_local_build(program: &str, args: &[String]) -> bool {
    let first = args.first().map(String::as_str).unwrap_or("");
    match program {
        "make" | "gmake" | "ninja" | "meson" | "scons" | "bazel" | "just" | "rake" | "gradle" | "mvn" | "ant" => true,
        "npm" | "pnpm" | "bun" => matches!(first, "run" | "start" | "test" | "exec" | "install" | "i" | "ci" | "rebuild" | "build"),
        "yarn" => args.is_empty() || matches!(first, "run" | "start" | "test" | "install" | "build"),
        "pip" | "pip3" => first == "install" && args.iter().any(|a| a == "." || a.starts_with("./") || a == "-e" || a == "--editable"),
        "cargo" => matches!(first, "run" | "build" | "test" | "install"),
        "go" => matches!(first, "run" | "build" | "generate" | "test"),
        _ => false,
    }
}

/// Whether a word holds downloaded content: a substitution whose commands download, or a
/// variable that was assigned one.
fn refs_download(word: &str, script: &Script, ctx: &Ctx) -> bool {
    let substituted =
        shell::substitutions_in(word).into_iter().any(|i| script.substitutions.get(i).is_some_and(|s| script_downloads(&s.script, ctx)));
    substituted || variables_in(word).iter().any(|v| ctx.tainted.contains(*v))
}

/// Whether any command in `script` produces downloaded content.
fn script_downloads(script: &Script, ctx: &Ctx) -> bool {
    script.pipelines.iter().flat_map(|p| &p.stages).any(|command| {
        let raw = invocation(&command.words);
        let inv = resolve(raw.words, raw.assignments, raw.via_xargs, script, ctx);
        let fetches = inv.program().is_some_and(|program| {
            let args = inv.args();
            download(program, args, &command.redirects, "", ctx).is_some() || code_fetches(program, args, script, ctx)
        });
        fetches || command.words.iter().chain(command.redirects.iter().map(|r| &r.target)).any(|w| refs_download(w, script, ctx))
    })
}

/// Whether an interpreter's code argument fetches from the network.
fn code_fetches(program: &str, args: &[String], script: &Script, ctx: &Ctx) -> bool {
    let Some(spec) = interpreter(program) else { return false };
    let whole = args.join(" ");
    interp_use(args, &spec).code.iter().any(|code| {
        if spec.shell {
            ctx.deeper().is_some_and(|deeper| script_downloads(&shell::parse(&unmark(code)), &deeper))
        } else {
            FETCHES.is_match(&whole) || refs_download(code, script, ctx)
        }
    })
}

// ---------------------------------------------------------------------------------------
// Deleting and overwriting
// ---------------------------------------------------------------------------------------

/// Programs that delete or overwrite the files they are given.
const DELETERS: &[&str] =
    &["rm", "rmdir", "shred", "unlink", "truncate", "mv", "cp", "chmod", "chown", "chgrp", "srm", "wipe", "dd", "ln", "install"];

/// Whether a command deletes or overwrites something outside the workspace.
fn destroys(program: &str, args: &[String], inv: &Invocation, upstream: &Upstream, script: &Script, ctx: &Ctx) -> bool {
    if args.iter().any(|a| a == "--no-preserve-root") && matches!(program, "rm" | "chmod" | "chown" | "chgrp") {
        return true;
    }
    // Making a file system or wiping signatures destroys a whole device.
    if program.starts_with("mkfs") || matches!(program, "wipefs" | "mkswap") {
        return true;
    }
    let targets: Vec<String> = match program {
        "rm" | "rmdir" | "unlink" | "srm" | "wipe" => parse_args(args, "", &[]).operands,
        "shred" => parse_args(args, "ns", &["iterations", "size", "random-source"]).operands,
        "truncate" => parse_args(args, "sr", &["size", "reference"]).operands,
        "dd" => args.iter().filter_map(|a| a.strip_prefix("of=")).map(str::to_string).collect(),
        "mv" => {
            let p = parse_args(args, "tS", &["target-directory", "suffix"]);
            let mut all = p.values(&["-t", "--target-directory"]);
            all.extend(p.operands);
            all
        }
        "cp" | "install" | "ln" => copy_destination(program, args),
        "chmod" | "chown" | "chgrp" => chmod_targets(args),
        "find" => return find_destroys(args, script, ctx),
        "sed" => sed_targets(args),
        "tee" => parse_args(args, "", &[]).operands.into_iter().filter(|t| !harmless_device(t)).collect(),
        "rsync" => {
            let operands = parse_args(args, "efBTM", &RSYNC_VALUES).operands;
            operands.last().filter(|d| operands.len() >= 2 && !remote_host_path(d)).cloned().into_iter().collect()
        }
        _ => Vec::new(),
    };
    if targets.iter().any(|t| outside_word(t, script)) {
        return true;
    }
    // `… | xargs rm` deletes what the pipeline sends it.
    inv.via_xargs && upstream.outside && DELETERS.contains(&program)
}

/// The file `cp`, `install` or `ln -f` overwrites: the `-t` directory or the last operand.
fn copy_destination(program: &str, args: &[String]) -> Vec<String> {
    let p = parse_args(args, "tSmog", &["target-directory", "suffix", "mode", "owner", "group"]);
    if program == "ln" && !p.has(&["-f", "--force"]) {
        return Vec::new();
    }
    let named = p.values(&["-t", "--target-directory"]);
    if !named.is_empty() {
        return named;
    }
    if program == "install" && p.has(&["-d", "--directory"]) {
        return p.operands;
    }
    if p.operands.len() >= 2 {
        return p.operands.last().cloned().into_iter().collect();
    }
    Vec::new()
}

/// The files `chmod`, `chown` or `chgrp` changes: the operands after the mode or owner.
fn chmod_targets(args: &[String]) -> Vec<String> {
    let p = parse_args(args, "", &[]);
    // `chmod -x f` writes its mode like an option, and `--reference` replaces it.
    let mode_as_option = args.iter().any(|a| a.len() > 1 && a.starts_with('-') && a[1..].chars().all(|c| "rwxXst".contains(c)));
    let by_reference = p.opts.iter().any(|(o, _)| o == "--reference");
    let skip = usize::from(!mode_as_option && !by_reference);
    p.operands.into_iter().skip(skip).collect()
}

/// The files `sed -i` edits in place.
fn sed_targets(args: &[String]) -> Vec<String> {
    let p = parse_args(args, "efl", &["expression", "file", "line-length"]);
    let in_place = p.opts.iter().any(|(o, _)| o == "-i" || o == "--in-place");
    if !in_place {
        return Vec::new();
    }
    let script_given = p.has(&["-e", "--expression", "-f", "--file"]);
    p.operands.into_iter().skip(usize::from(!script_given)).collect()
}

/// `find`'s starting points and its expression.
fn find_parts(args: &[String]) -> (Vec<String>, Vec<String>) {
    let mut i = 0;
    while let Some(a) = args.get(i) {
        match a.as_str() {
            "-H" | "-L" | "-P" => i += 1,
            "-D" => i += 2,
            _ if a.starts_with("-O") => i += 1,
            _ => break,
        }
    }
    let rest = args.get(i..).unwrap_or_default();
    let starts = rest.iter().take_while(|a| !a.starts_with('-') && !matches!(a.as_str(), "(" | "!" | ")" | ",")).count();
    (rest[..starts].to_vec(), rest[starts..].to_vec())
}

/// The commands `find -exec`, `-execdir`, `-ok` and `-okdir` run.
fn find_exec_commands(expression: &[String]) -> Vec<Vec<String>> {
    let mut commands = Vec::new();
    let mut i = 0;
    while i < expression.len() {
        if matches!(expression[i].as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
            let end = expression[i + 1..].iter().position(|a| a == ";" || a == "+").map_or(expression.len(), |p| i + 1 + p);
            commands.push(expression[i + 1..end].to_vec());
            i = end;
        }
        i += 1;
    }
    commands
}

/// Whether `find` deletes what it finds (`-delete`, `-exec rm`, `-exec sh -c 'rm …'`)
/// while it searches outside the workspace.
fn find_destroys(args: &[String], script: &Script, ctx: &Ctx) -> bool {
    let (starts, expression) = find_parts(args);
    let deletes = expression.iter().any(|a| a == "-delete") || find_exec_commands(&expression).iter().any(|c| deletes_files(c, ctx));
    deletes && starts.iter().any(|s| outside_word(s, script))
}

fn deletes_files(words: &[String], ctx: &Ctx) -> bool {
    let inv = invocation(words);
    let Some(program) = inv.program() else { return false };
    if DELETERS.contains(&program) {
        return true;
    }
    let Some(spec) = interpreter(program).filter(|s| s.shell) else { return false };
    let Some(deeper) = ctx.deeper() else { return false };
    interp_use(inv.args(), &spec)
        .code
        .iter()
        .any(|code| shell::parse(&unmark(code)).pipelines.iter().flat_map(|p| &p.stages).any(|c| deletes_files(&c.words, &deeper)))
}

/// Whether a path lies outside the workspace. A substitution counts when its commands
/// name such a path, as in `rm -rf $(ls -d /var/*)`.
fn outside_word(word: &str, script: &Script) -> bool {
    let substituted =
        shell::substitutions_in(word).into_iter().any(|i| script.substitutions.get(i).is_some_and(|s| mentions_outside(&s.script)));
    substituted || outside_path(&unmark(word).replace("SUBSTITUTION", "x"))
}

fn mentions_outside(script: &Script) -> bool {
    script.pipelines.iter().flat_map(|p| &p.stages).any(|c| c.words.iter().skip(1).any(|w| !w.starts_with('-') && outside_word(w, script)))
}

/// Absolute paths, the home directory and paths that climb above the workspace.
pub fn outside_path(path: &str) -> bool {
    let path = path.trim();
    if path.starts_with('/') || path.starts_with('~') {
        return true;
    }
    let outside_variables =
        ["$HOME", "${HOME", "$TMPDIR", "${TMPDIR", "$XDG_", "${XDG_", "$OLDPWD", "${OLDPWD", "$USERPROFILE", "${USERPROFILE"];
    if outside_variables.iter().any(|v| path.starts_with(v)) {
        return true;
    }
    // `.*` matches `..` in older shells.
    if path.starts_with(".*") || path.starts_with("..*") {
        return true;
    }
    let mut depth = 0i32;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            _ => depth += 1,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_paths() {
        for path in ["/", "/tmp/x", "~", "~/", "$HOME/x", "${HOME}", "..", "../x", "a/../../b", ".*"] {
            assert!(outside_path(path), "{path}");
        }
        for path in ["x", "./x", "a/../b", "*.bak", ".", "build/"] {
            assert!(!outside_path(path), "{path}");
        }
    }

    #[test]
    fn prefixes_are_taken_off() {
        let words = |s: &str| shell_words::split(s).unwrap();
        assert_eq!(invocation(&words("sudo -u root env A=1 nohup rm -rf /x")).words, words("rm -rf /x"));
        assert_eq!(invocation(&words("X=1 Y=2 command exec time xargs -0 -I {} sh {}")).words, words("sh {}"));
        assert!(invocation(&words("find . | xargs -n1 rm")).via_xargs || invocation(&words("xargs -n1 rm")).via_xargs);
        assert!(invocation(&words("command -v curl")).words.is_empty());
        assert_eq!(invocation(&words("timeout 5 curl u")).words, words("curl u"));
    }

    #[test]
    fn options_are_parsed_like_getopt() {
        let args: Vec<String> = shell_words::split("-fsSLo out.sh https://x --retry 3 -- -odd").unwrap();
        let p = parse_args(&args, "o", &["retry"]);
        assert_eq!(p.values(&["-o"]), vec!["out.sh"]);
        assert_eq!(p.operands, vec!["https://x", "-odd"]);
        assert!(p.has(&["-L"]));
    }

    #[test]
    fn download_names() {
        assert_eq!(url_file_names("https://x.example/a/setup.sh?v=1"), vec!["setup.sh", "setup.sh?v=1"]);
        assert_eq!(url_file_names("https://x.example/"), vec!["index.html"]);
        let wget_args: Vec<String> = shell_words::split("-q https://x/y/i.sh -P bin").unwrap();
        assert_eq!(wget(&wget_args).outputs, vec!["i.sh", "bin/i.sh"]);
        assert_eq!(clone_of(vec!["https://github.com/o/tool.git".into()]).outputs, vec!["tool"]);
    }
}
