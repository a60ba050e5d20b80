//! Just enough of the shell's grammar to find the simple commands in a piece of command
//! text: the list and pipeline operators, quoting, comments, redirections, and the command
//! substitutions (`$( … )`, backticks) and process substitutions (`<( … )`, `>( … )`) whose
//! commands run too. Words are split with `shell-words`, so quoting tricks such as `\rm`,
//! `'c'url` or `"sh"` read as the programs they name.

/// A substitution's place inside a word is written as `MARK_OPEN`, its index in
/// [`Script::substitutions`] and `MARK_CLOSE`, so that the analysis can ask what a word
/// runs. Both are private-use characters, which no real command contains.
const MARK_OPEN: char = '\u{E000}';
const MARK_CLOSE: char = '\u{E001}';

/// Substitutions nest; beyond this depth the inner text is not parsed, which keeps a
/// hostile candidate from exhausting the stack.
const MAX_DEPTH: usize = 12;

/// `$( … )` or backticks, whose output becomes part of a word, or `<( … )` and `>( … )`,
/// which become a file name connected to their commands. Either way the commands run.
#[derive(Debug, Clone)]
pub struct Substitution {
    pub script: Script,
}

/// A command list: pipelines separated by `;`, `&&`, `||`, `&` or newlines.
#[derive(Debug, Clone, Default)]
pub struct Script {
    pub pipelines: Vec<Pipeline>,
    pub substitutions: Vec<Substitution>,
}

/// Simple commands joined by `|`; each one's output is the next one's input.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub stages: Vec<Command>,
}

impl Pipeline {
    /// The pipeline's source text, for excerpts.
    pub fn text(&self) -> String {
        self.stages.iter().map(|s| s.text.as_str()).collect::<Vec<_>>().join(" | ")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The operator without its file descriptor: `>`, `>>`, `<`, `<<<`, `&>` and so on.
    pub op: String,
    pub target: String,
}

impl Redirect {
    /// Whether the redirection writes to its target.
    pub fn writes(&self) -> bool {
        matches!(self.op.as_str(), ">" | ">>" | ">|" | "&>" | "&>>" | "<>")
    }

    /// Whether the redirection feeds the command's standard input from its target.
    pub fn reads_file(&self) -> bool {
        matches!(self.op.as_str(), "<" | "<>")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The command as written, substitutions included.
    pub text: String,
    /// The words after quote removal, without redirections; substitutions are markers.
    pub words: Vec<String>,
    pub redirects: Vec<Redirect>,
}

/// The indexes of the substitutions a word contains.
pub fn substitutions_in(word: &str) -> Vec<usize> {
    let mut found = Vec::new();
    let mut rest = word;
    while let Some(start) = rest.find(MARK_OPEN) {
        let after = &rest[start + MARK_OPEN.len_utf8()..];
        let Some(end) = after.find(MARK_CLOSE) else { break };
        if let Ok(index) = after[..end].parse() {
            found.push(index);
        }
        rest = &after[end + MARK_CLOSE.len_utf8()..];
    }
    found
}

/// Whether a word is nothing but one substitution, like `$(curl …)` or `<(wget …)`.
pub fn is_whole_substitution(word: &str) -> bool {
    word.starts_with(MARK_OPEN) && word.ends_with(MARK_CLOSE) && word.matches(MARK_OPEN).count() == 1
}

/// Parses command text. Text whose quotes or parentheses never close is parsed a second
/// time line by line and both readings are kept: a stray apostrophe must not hide the
/// commands on the lines after it.
pub fn parse(text: &str) -> Script {
    let (mut script, balanced) = parse_at(text, 0);
    if !balanced && text.contains('\n') {
        for line in text.lines() {
            let (more, _) = parse_at(line, 0);
            let offset = script.substitutions.len();
            script.substitutions.extend(more.substitutions);
            for mut pipeline in more.pipelines {
                for stage in &mut pipeline.stages {
                    for word in &mut stage.words {
                        *word = shift_marks(word, offset);
                    }
                    for redirect in &mut stage.redirects {
                        redirect.target = shift_marks(&redirect.target, offset);
                    }
                }
                script.pipelines.push(pipeline);
            }
        }
    }
    script
}

/// Renumbers the substitution markers in a word by `offset`.
fn shift_marks(word: &str, offset: usize) -> String {
    let mut out = String::new();
    let mut rest = word;
    while let Some(start) = rest.find(MARK_OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + MARK_OPEN.len_utf8()..];
        let Some(end) = after.find(MARK_CLOSE) else {
            rest = &rest[start..];
            break;
        };
        let index: usize = after[..end].parse().unwrap_or(0);
        out.push(MARK_OPEN);
        out.push_str(&(index + offset).to_string());
        out.push(MARK_CLOSE);
        rest = &after[end + MARK_CLOSE.len_utf8()..];
    }
    out.push_str(rest);
    out
}

/// The parser's state while it walks the text.
struct Builder<'a> {
    text: &'a str,
    script: Script,
    stages: Vec<Command>,
    /// The current simple command with substitutions replaced by markers.
    segment: String,
    /// Where the current simple command starts in `text`.
    segment_start: usize,
}

impl Builder<'_> {
    fn end_stage(&mut self, at: usize) {
        let source = self.text[self.segment_start..at].trim();
        let segment = std::mem::take(&mut self.segment);
        if !segment.trim().is_empty() {
            let (words, redirects) = words_and_redirects(&segment);
            if !words.is_empty() || !redirects.is_empty() {
                self.stages.push(Command { text: source.to_string(), words, redirects });
            }
        }
    }

    fn end_pipeline(&mut self, at: usize) {
        self.end_stage(at);
        if !self.stages.is_empty() {
            self.script.pipelines.push(Pipeline { stages: std::mem::take(&mut self.stages) });
        }
    }

    /// Starts the next simple command after the operator that ends at `next`.
    fn restart(&mut self, next: usize) {
        self.segment_start = next;
    }

    /// Handles a `|`. A pipe after a closing `}`, `)`, `done`, `fi` or `esac` feeds the
    /// whole group before it, so the group's last pipeline is reopened and continued.
    fn pipe(&mut self, at: usize) {
        let closing = matches!(self.segment.trim(), "" | "}" | ")" | "done" | "fi" | "esac");
        if closing && self.stages.is_empty() {
            self.segment.clear();
            if let Some(last) = self.script.pipelines.pop() {
                self.stages = last.stages;
            }
        } else {
            self.end_stage(at);
        }
    }
}

/// Parses `text`; the flag says whether every quote and substitution closed.
fn parse_at(text: &str, depth: usize) -> (Script, bool) {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte_at = |i: usize| chars.get(i).map_or(text.len(), |(b, _)| *b);
    let mut b = Builder { text, script: Script::default(), stages: Vec::new(), segment: String::new(), segment_start: 0 };
    let mut balanced = true;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        let next = chars.get(i + 1).map(|(_, c)| *c);
        if quote == Some('\'') {
            b.segment.push(c);
            if c == '\'' {
                quote = None;
            }
            i += 1;
            continue;
        }
        // Substitutions run in double quotes as they do outside them.
        let substitution = match (c, next) {
            ('$', Some('(')) => Some((i + 2, matching_paren(&chars, i + 2))),
            ('`', _) => Some((i + 1, matching_backtick(&chars, i + 1))),
            ('<' | '>', Some('(')) if quote.is_none() => Some((i + 2, matching_paren(&chars, i + 2))),
            _ => None,
        };
        if let Some((start, end)) = substitution {
            let end = end.unwrap_or_else(|| {
                balanced = false;
                chars.len()
            });
            let inner = &text[byte_at(start)..byte_at(end)];
            let script = if depth < MAX_DEPTH {
                let (script, inner_balanced) = parse_at(inner, depth + 1);
                balanced &= inner_balanced;
                script
            } else {
                Script::default()
            };
            let index = b.script.substitutions.len();
            b.script.substitutions.push(Substitution { script });
            b.segment.push(MARK_OPEN);
            b.segment.push_str(&index.to_string());
            b.segment.push(MARK_CLOSE);
            i = end + 1;
            continue;
        }
        if quote == Some('"') {
            b.segment.push(c);
            if c == '\\' {
                if let Some(n) = next {
                    b.segment.push(n);
                    i += 1;
                }
            } else if c == '"' {
                quote = None;
            }
            i += 1;
            continue;
        }
        let at_word_start = b.segment.chars().last().is_none_or(char::is_whitespace);
        match c {
            '\\' => {
                b.segment.push(c);
                if let Some(n) = next {
                    b.segment.push(n);
                    i += 1;
                }
            }
            '\'' | '"' => {
                quote = Some(c);
                b.segment.push(c);
            }
            '#' if at_word_start => {
                // A comment runs to the end of the line; the newline still ends the command.
                while i + 1 < chars.len() && chars[i + 1].1 != '\n' {
                    i += 1;
                }
            }
            '\n' if b.segment.trim().is_empty() && !b.stages.is_empty() => {
                // A line that ends in `|` continues the pipeline on the next line.
                b.restart(byte_at(i + 1));
            }
            ';' | '\n' => {
                b.end_pipeline(byte_at(i));
                if c == ';' && next == Some(';') {
                    i += 1;
                }
                b.restart(byte_at(i + 1));
            }
            '&' => {
                let after_redirect = matches!(b.segment.chars().last(), Some('>' | '<'));
                if after_redirect || next == Some('>') {
                    b.segment.push(c);
                } else {
                    b.end_pipeline(byte_at(i));
                    if next == Some('&') {
                        i += 1;
                    }
                    b.restart(byte_at(i + 1));
                }
            }
            '|' => {
                if next == Some('|') {
                    b.end_pipeline(byte_at(i));
                    i += 1;
                } else {
                    b.pipe(byte_at(i));
                    if next == Some('&') {
                        i += 1;
                    }
                }
                b.restart(byte_at(i + 1));
            }
            '(' => {
                // A subshell starts a new command list.
                b.end_pipeline(byte_at(i));
                b.restart(byte_at(i + 1));
            }
            ')' => {
                // Its end leaves the last pipeline open, so that `( … ) | sh` is one pipeline.
                b.end_stage(byte_at(i));
                b.restart(byte_at(i + 1));
            }
            _ => b.segment.push(c),
        }
        i += 1;
    }
    if quote.is_some() {
        balanced = false;
    }
    b.end_pipeline(text.len());
    (b.script, balanced)
}

/// The index of the `)` that closes a parenthesis opened just before `start`.
fn matching_paren(chars: &[(usize, char)], start: usize) -> Option<usize> {
    let mut depth = 1;
    let mut quote: Option<char> = None;
    let mut i = start;
    while i < chars.len() {
        let c = chars[i].1;
        match (quote, c) {
            (Some('\''), '\'') => quote = None,
            (Some('\''), _) => {}
            (_, '\\') => i += 1,
            (Some('"'), '"') => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            (None, _) => {}
        }
        i += 1;
    }
    None
}

/// The index of the backtick that closes one opened just before `start`.
fn matching_backtick(chars: &[(usize, char)], start: usize) -> Option<usize> {
    let mut i = start;
    while i < chars.len() {
        match chars[i].1 {
            '\\' => i += 1,
            '`' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The operators a redirection word can start with, longest first.
const REDIRECT_OPS: [&str; 12] = ["&>>", "&>", "<<<", "<<-", "<<", "<>", "<&", ">>", ">|", ">&", "<", ">"];

/// Splits a simple command into words with `shell-words`, falling back to whitespace when
/// its quoting is unbalanced, and takes out the redirections.
fn words_and_redirects(segment: &str) -> (Vec<String>, Vec<Redirect>) {
    let tokens = shell_words::split(segment).unwrap_or_else(|_| segment.split_whitespace().map(str::to_string).collect());
    let mut words = Vec::new();
    let mut redirects = Vec::new();
    let mut tokens = tokens.into_iter();
    while let Some(token) = tokens.next() {
        let without_fd = token.trim_start_matches(|c: char| c.is_ascii_digit());
        let op = REDIRECT_OPS.iter().find(|op| without_fd.starts_with(**op));
        // `&>` takes no file descriptor in front, so `2&>x` is not a redirection.
        let op = op.filter(|op| !op.starts_with('&') || without_fd.len() == token.len());
        match op {
            Some(op) => {
                let rest = &without_fd[op.len()..];
                let target = if rest.is_empty() { tokens.next().unwrap_or_default() } else { rest.to_string() };
                redirects.push(Redirect { op: op.to_string(), target });
            }
            None => words.push(token),
        }
    }
    (words, redirects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commands(text: &str) -> Vec<Vec<String>> {
        parse(text).pipelines.iter().flat_map(|p| p.stages.iter().map(|s| s.words.clone())).collect()
    }

    #[test]
    fn lists_and_pipelines_split_into_simple_commands() {
        let script = parse("curl -s https://x/y -o tmp; sh tmp && echo ok || echo no & wait\nwget -qO- u | sudo bash");
        let stages: Vec<usize> = script.pipelines.iter().map(|p| p.stages.len()).collect();
        assert_eq!(stages, vec![1, 1, 1, 1, 1, 2]);
        assert_eq!(script.pipelines[1].stages[0].words, vec!["sh", "tmp"]);
        assert_eq!(script.pipelines[5].stages[1].words, vec!["sudo", "bash"]);
        assert_eq!(script.pipelines[5].text(), "wget -qO- u | sudo bash");
    }

    #[test]
    fn quoting_and_escapes_do_not_split() {
        assert_eq!(commands(r#"echo "a; b" 'c | d' e\;f"#), vec![vec!["echo", "a; b", "c | d", "e;f"]]);
        assert_eq!(commands(r"find . -exec rm {} \;"), vec![vec!["find", ".", "-exec", "rm", "{}", ";"]]);
        assert_eq!(commands(r#"\rm -rf 'x'; "c"url u"#), vec![vec!["rm", "-rf", "x"], vec!["curl", "u"]]);
    }

    #[test]
    fn substitutions_are_parsed_and_marked() {
        let script = parse(r#"sh -c "$(curl -fsSL https://x)"; bash <(curl -s u); echo `wget -O - v`"#);
        assert_eq!(script.substitutions.len(), 3);
        assert_eq!(script.substitutions[0].script.pipelines[0].stages[0].words[0], "curl");
        let sh = &script.pipelines[0].stages[0];
        assert_eq!(substitutions_in(&sh.words[2]), vec![0]);
        assert!(is_whole_substitution(&script.pipelines[1].stages[0].words[1]));
        assert_eq!(sh.text, r#"sh -c "$(curl -fsSL https://x)""#);
    }

    #[test]
    fn redirections_are_separated_from_words() {
        let script = parse("curl u > x.sh 2>&1; cat <x.sh >>log; sh < <(curl v)");
        let first = &script.pipelines[0].stages[0];
        assert_eq!(first.words, vec!["curl", "u"]);
        assert_eq!(first.redirects[0], Redirect { op: ">".into(), target: "x.sh".into() });
        assert_eq!(first.redirects[1], Redirect { op: ">&".into(), target: "1".into() });
        let second = &script.pipelines[1].stages[0];
        assert_eq!(second.words, vec!["cat"]);
        assert_eq!(second.redirects.len(), 2);
        let third = &script.pipelines[2].stages[0];
        assert_eq!(third.words, vec!["sh"]);
        assert!(is_whole_substitution(&third.redirects[0].target));
    }

    #[test]
    fn groups_keep_their_pipe() {
        let script = parse("(cd d; curl u) | sh\n{ wget -O- v; } | bash");
        let piped: Vec<String> = script.pipelines.iter().filter(|p| p.stages.len() == 2).map(|p| p.stages[1].words[0].clone()).collect();
        assert_eq!(piped, vec!["sh", "bash"]);
        let continued = parse("curl -s u |\n  sh");
        assert_eq!(continued.pipelines.len(), 1);
        assert_eq!(continued.pipelines[0].stages.len(), 2);
    }

    #[test]
    fn comments_are_skipped_and_stray_quotes_do_not_hide_later_lines() {
        assert_eq!(commands("ls # don't; rm x\nwc -l f"), vec![vec!["ls"], vec!["wc", "-l", "f"]]);
        let all = commands("echo it's\ncurl u | sh");
        assert!(all.contains(&vec!["sh".to_string()]), "{all:?}");
    }
}
