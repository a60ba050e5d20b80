//! Per-program argument rules of the allowlist: defence in depth behind the sandbox.
//!
//! Refusing known-bad options (`sort --compress-program`, `date -s`, ...) never closes the
//! class: GNU tools accept abbreviated long options (`--compress-prog=sh`), clustered short
//! options (`-us`) and values attached to them (`-f/etc/passwd`, `-o../x`). So the rules
//! allow, per program, only the options listed here; everything else is refused. Each
//! option says whether it takes a value and whether that value names a file, and each
//! program says whether its operands name files. Every file name, wherever it appears (an
//! operand, a separate or attached option value, after `=`), must stay inside the
//! workspace: not absolute and without a `..` component.

use std::path::{Component, Path};

use super::ExecError;

/// What an option takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    /// Nothing: a flag.
    Nothing,
    /// A value that is not a file name (a count, a pattern, a format).
    Text,
    /// A file name, which must stay inside the workspace.
    Path,
}

/// One allowed option: its short letter and/or its long name, and what it takes.
struct Opt {
    short: Option<char>,
    long: Option<&'static str>,
    takes: Takes,
}

const fn flag(short: char, long: &'static str) -> Opt {
    Opt { short: Some(short), long: if long.is_empty() { None } else { Some(long) }, takes: Takes::Nothing }
}
const fn text(short: char, long: &'static str) -> Opt {
    Opt { short: Some(short), long: if long.is_empty() { None } else { Some(long) }, takes: Takes::Text }
}
const fn path(short: char, long: &'static str) -> Opt {
    Opt { short: Some(short), long: if long.is_empty() { None } else { Some(long) }, takes: Takes::Path }
}
const fn long_flag(long: &'static str) -> Opt {
    Opt { short: None, long: Some(long), takes: Takes::Nothing }
}
const fn long_text(long: &'static str) -> Opt {
    Opt { short: None, long: Some(long), takes: Takes::Text }
}

/// How a program's operands (its non-option arguments) are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operands {
    /// File names: each must stay inside the workspace.
    Files,
    /// Text that the program never opens (`echo`, `tr`'s sets, `seq`'s numbers).
    Text,
    /// `date`: only an output format starting with `+`; any other operand sets the clock.
    DateFormat,
}

/// The rules of one allowed program.
pub struct ProgramRules {
    name: &'static str,
    options: &'static [Opt],
    operands: Operands,
    /// The program prints its arguments and treats unknown options as text (`echo`), so
    /// option parsing does not apply at all.
    options_are_text: bool,
}

const fn program(name: &'static str, options: &'static [Opt], operands: Operands) -> ProgramRules {
    ProgramRules { name, options, operands, options_are_text: false }
}

/// The rules for every program of [`super::DEFAULT_ALLOWLIST`]. A program on an
/// operator's own allowlist that has no entry here is refused: an unknown program's
/// options cannot be judged.
static RULES: &[ProgramRules] = &[
    program(
        "ls",
        &[
            flag('a', "all"),
            flag('A', "almost-all"),
            flag('l', ""),
            flag('h', "human-readable"),
            flag('r', "reverse"),
            flag('t', ""),
            flag('S', ""),
            flag('R', "recursive"),
            flag('1', ""),
            flag('d', "directory"),
            flag('F', "classify"),
            flag('p', ""),
            flag('i', "inode"),
            flag('U', ""),
            flag('X', ""),
            flag('s', "size"),
            long_text("sort"),
            long_text("color"),
            long_flag("group-directories-first"),
        ],
        Operands::Files,
    ),
    program(
        "cat",
        &[
            flag('n', "number"),
            flag('b', "number-nonblank"),
            flag('A', "show-all"),
            flag('E', "show-ends"),
            flag('s', "squeeze-blank"),
            flag('T', "show-tabs"),
            flag('v', "show-nonprinting"),
        ],
        Operands::Files,
    ),
    program("head", &[text('n', "lines"), text('c', "bytes"), flag('q', "quiet"), flag('v', "verbose")], Operands::Files),
    program("tail", &[text('n', "lines"), text('c', "bytes"), flag('q', "quiet"), flag('v', "verbose")], Operands::Files),
    program(
        "wc",
        &[flag('l', "lines"), flag('w', "words"), flag('c', "bytes"), flag('m', "chars"), flag('L', "max-line-length")],
        Operands::Files,
    ),
    program(
        "grep",
        &[
            flag('i', "ignore-case"),
            flag('v', "invert-match"),
            flag('n', "line-number"),
            flag('c', "count"),
            flag('l', "files-with-matches"),
            flag('L', "files-without-match"),
            flag('h', "no-filename"),
            flag('H', "with-filename"),
            flag('o', "only-matching"),
            flag('q', "quiet"),
            flag('r', "recursive"),
            flag('R', "dereference-recursive"),
            flag('w', "word-regexp"),
            flag('x', "line-regexp"),
            flag('E', "extended-regexp"),
            flag('F', "fixed-strings"),
            flag('G', "basic-regexp"),
            flag('s', "no-messages"),
            flag('I', ""),
            text('e', "regexp"),
            path('f', "file"),
            text('m', "max-count"),
            text('A', "after-context"),
            text('B', "before-context"),
            text('C', "context"),
            long_text("include"),
            long_text("exclude"),
            long_text("exclude-dir"),
            long_text("color"),
            long_text("colour"),
        ],
        Operands::Files,
    ),
    program(
        "sort",
        &[
            flag('b', "ignore-leading-blanks"),
            flag('d', "dictionary-order"),
            flag('f', "ignore-case"),
            flag('g', "general-numeric-sort"),
            flag('i', "ignore-nonprinting"),
            flag('M', "month-sort"),
            flag('h', "human-numeric-sort"),
            flag('n', "numeric-sort"),
            flag('R', "random-sort"),
            flag('r', "reverse"),
            flag('V', "version-sort"),
            flag('c', "check"),
            flag('m', "merge"),
            flag('s', "stable"),
            flag('u', "unique"),
            flag('z', "zero-terminated"),
            text('k', "key"),
            text('t', "field-separator"),
            path('o', "output"),
        ],
        Operands::Files,
    ),
    program(
        "uniq",
        &[
            flag('c', "count"),
            flag('d', "repeated"),
            flag('D', ""),
            flag('i', "ignore-case"),
            flag('u', "unique"),
            text('f', "skip-fields"),
            text('s', "skip-chars"),
            text('w', "check-chars"),
        ],
        Operands::Files,
    ),
    program(
        "cut",
        &[
            text('d', "delimiter"),
            text('f', "fields"),
            text('c', "characters"),
            text('b', "bytes"),
            flag('s', "only-delimited"),
            flag('n', ""),
            long_flag("complement"),
            long_text("output-delimiter"),
        ],
        Operands::Files,
    ),
    program("tr", &[flag('d', "delete"), flag('s', "squeeze-repeats"), flag('c', "complement"), flag('C', "")], Operands::Text),
    ProgramRules { name: "echo", options: &[], operands: Operands::Text, options_are_text: true },
    ProgramRules { name: "printf", options: &[], operands: Operands::Text, options_are_text: true },
    program(
        "date",
        &[flag('u', "utc"), flag('R', "rfc-email"), text('d', "date"), long_text("iso-8601"), long_text("rfc-3339"), text('I', "")],
        Operands::DateFormat,
    ),
    program("pwd", &[flag('L', "logical"), flag('P', "physical")], Operands::Text),
    program(
        "diff",
        &[
            flag('u', ""),
            text('U', "unified"),
            flag('c', ""),
            text('C', "context"),
            flag('q', "brief"),
            flag('y', "side-by-side"),
            flag('i', "ignore-case"),
            flag('w', "ignore-all-space"),
            flag('b', "ignore-space-change"),
            flag('B', "ignore-blank-lines"),
            flag('N', "new-file"),
            flag('r', "recursive"),
            flag('s', "report-identical-files"),
            flag('t', "expand-tabs"),
            flag('a', "text"),
            long_text("color"),
        ],
        Operands::Files,
    ),
    program("stat", &[flag('L', "dereference"), flag('t', "terse"), text('c', "format"), long_text("printf")], Operands::Files),
    program(
        "du",
        &[
            flag('s', "summarize"),
            flag('h', "human-readable"),
            flag('a', "all"),
            flag('c', "total"),
            flag('b', "bytes"),
            flag('k', ""),
            flag('m', ""),
            text('d', "max-depth"),
            flag('S', "separate-dirs"),
        ],
        Operands::Files,
    ),
    program("basename", &[flag('a', "multiple"), text('s', "suffix"), flag('z', "zero")], Operands::Text),
    program("dirname", &[flag('z', "zero")], Operands::Text),
    program("true", &[], Operands::Text),
    program("false", &[], Operands::Text),
    program("seq", &[flag('w', "equal-width"), text('s', "separator"), text('f', "format")], Operands::Text),
];

/// The rules of `program`, if it has any.
pub fn rules_for(program: &str) -> Option<&'static ProgramRules> {
    RULES.iter().find(|rules| rules.name == program)
}

/// Checks the arguments (without the program name) against the program's rules.
pub fn check(rules: &ProgramRules, arguments: &[String]) -> Result<(), ExecError> {
    if rules.options_are_text {
        return Ok(());
    }
    let refuse = |argument: &str, why: &str| ExecError::OptionRefused(rules.name.to_string(), argument.to_string(), why.to_string());
    let mut index = 0;
    let mut options_ended = false;
    while index < arguments.len() {
        let argument = &arguments[index];
        index += 1;
        if argument == "--" && !options_ended {
            options_ended = true;
            continue;
        }
        // A number (`seq -5 5`, `head -3`) is an operand, not an option.
        let is_option = !options_ended && argument.len() > 1 && argument.starts_with('-') && argument.parse::<f64>().is_err();
        if !is_option {
            check_operand(rules, argument)?;
            continue;
        }
        if let Some(long) = argument.strip_prefix("--") {
            let (name, attached) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            // Exact names only: GNU's abbreviations (`--compress-prog`) are refused.
            let option =
                rules.options.iter().find(|o| o.long == Some(name)).ok_or_else(|| refuse(argument, "this option is not allowed"))?;
            match (option.takes, attached) {
                (Takes::Nothing, Some(_)) => return Err(refuse(argument, "this option takes no value")),
                (Takes::Nothing, None) => {}
                (takes, Some(value)) => check_value(takes, argument, value)?,
                (takes, None) => {
                    let value = arguments.get(index).ok_or_else(|| refuse(argument, "this option needs a value"))?;
                    index += 1;
                    check_value(takes, &format!("{argument} {value}"), value)?;
                }
            }
            continue;
        }
        // A cluster of short options; the first one that takes a value takes the rest of
        // the cluster, or else the next argument.
        let letters: Vec<(usize, char)> = argument.char_indices().skip(1).collect();
        for (position, letter) in letters {
            let option = rules
                .options
                .iter()
                .find(|o| o.short == Some(letter))
                .ok_or_else(|| refuse(argument, &format!("the option -{letter} is not allowed")))?;
            if option.takes == Takes::Nothing {
                continue;
            }
            let rest = &argument[position + letter.len_utf8()..];
            if rest.is_empty() {
                let value = arguments.get(index).ok_or_else(|| refuse(argument, "this option needs a value"))?;
                index += 1;
                check_value(option.takes, &format!("{argument} {value}"), value)?;
            } else {
                check_value(option.takes, argument, rest)?;
            }
            break;
        }
    }
    Ok(())
}

fn check_value(takes: Takes, argument: &str, value: &str) -> Result<(), ExecError> {
    match takes {
        Takes::Path => check_path(argument, value),
        Takes::Text | Takes::Nothing => Ok(()),
    }
}

fn check_operand(rules: &ProgramRules, operand: &str) -> Result<(), ExecError> {
    match rules.operands {
        Operands::Files => check_path(operand, operand),
        Operands::Text => Ok(()),
        Operands::DateFormat if operand.starts_with('+') => Ok(()),
        Operands::DateFormat => Err(ExecError::OptionRefused(
            rules.name.to_string(),
            operand.to_string(),
            "only an output format starting with `+` is allowed (other operands set the clock)".into(),
        )),
    }
}

/// A file name must stay inside the workspace: relative, with no `..` component.
fn check_path(argument: &str, value: &str) -> Result<(), ExecError> {
    let path = Path::new(value);
    if path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ExecError::PathOutside(argument.to_string()));
    }
    Ok(())
}
