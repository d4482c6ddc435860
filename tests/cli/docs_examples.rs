//! Every command line the documentation shows goes through the real argument parser.
//!
//! The lines are extracted, not listed: every fenced code block of README.md and docs/*.md,
//! and every example in a `--help` text (`after_help`). A new example is covered the day it
//! is written. A line whose flags the binary does not take (or that makes the parser panic,
//! as `--only` once did) fails here, naming the file and the line.

use std::path::Path;

use clap::{CommandFactory, Parser};
use magnetfetch::internals::cli::Cli;

/// One documented command: where it was found and its arguments after `magnetfetch`.
#[derive(Debug)]
struct Example {
    origin: String,
    args: Vec<String>,
}

/// Splits one shell line into words (single and double quotes, backslash escapes), stopping
/// at an unquoted `#` comment. Operators (`|`, `&&`, `;`, `&`, `>`, `<`, `2>`) become their own
/// words so the caller can cut the line into commands.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                if !has {
                    cur.push(QUOTED);
                }
                has = true;
                for d in chars.by_ref() {
                    if d == '\'' {
                        break;
                    }
                    cur.push(d);
                }
            }
            '"' => {
                if !has {
                    cur.push(QUOTED);
                }
                has = true;
                while let Some(d) = chars.next() {
                    match d {
                        '"' => break,
                        '\\' => {
                            if let Some(e) = chars.next() {
                                cur.push(e);
                            }
                        }
                        _ => cur.push(d),
                    }
                }
            }
            '\\' => {
                has = true;
                if let Some(e) = chars.next() {
                    cur.push(e);
                }
            }
            '#' if !has => break,
            c if c.is_whitespace() => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            '|' | ';' | '&' | '>' | '<' => {
                if has {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
                let mut op = c.to_string();
                while let Some(&d) = chars.peek() {
                    if matches!(d, '|' | '&' | '>') {
                        op.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                words.push(op);
            }
            c => {
                has = true;
                cur.push(c);
            }
        }
    }
    if has {
        words.push(cur);
    }
    words
}

/// Marks a word that began with a quote (so a quoted `'[::1]:6881'` is no synopsis `[...]`);
/// removed before the word is used.
const QUOTED: char = '\u{1}';

fn is_operator(w: &str) -> bool {
    w.chars().all(|c| matches!(c, '|' | ';' | '&' | '>' | '<')) && !w.is_empty()
}

/// The magnetfetch commands of one (continuation-joined) shell line.
fn commands_in(line: &str) -> Vec<Vec<String>> {
    let words = shell_words(line);
    let mut out = Vec::new();
    let mut seg: Vec<String> = Vec::new();
    let mut redirect = false;
    for w in words.into_iter().chain(std::iter::once(";".to_string())) {
        if is_operator(&w) {
            // After `>`/`<` the next word is a file name, then the command goes on.
            redirect = w.contains('>') || w.contains('<');
            if !redirect {
                if let Some(args) = magnetfetch_args(&seg) {
                    out.push(args);
                }
                seg.clear();
            }
            continue;
        }
        if redirect {
            redirect = false;
            continue;
        }
        seg.push(w);
    }
    out
}

/// The arguments after `magnetfetch` (or `.../magnetfetch`, or `cargo run ... --`), with
/// synopsis notation removed: `[--flag VALUE]` groups are optional and left out, `...` too.
fn magnetfetch_args(seg: &[String]) -> Option<Vec<String>> {
    let start = if seg.first().is_some_and(|w| w == "cargo") && seg.get(1) == Some(&"run".into()) {
        seg.iter().position(|w| w == "--")? + 1
    } else {
        seg.iter()
            .position(|w| w == "magnetfetch" || w.ends_with("/magnetfetch"))?
            + 1
    };
    // Environment assignments and wrappers (`time`, `/usr/bin/time -v`) before the binary
    // are skipped by looking for the binary itself; what follows are its arguments.
    let mut args = Vec::new();
    let mut depth = 0usize;
    for w in &seg[start..] {
        let quoted = w.starts_with(QUOTED);
        let w = w.trim_start_matches(QUOTED);
        if w.starts_with('[') && !quoted {
            depth += 1;
        }
        let closes = !quoted && (w.ends_with(']') || w.ends_with("]..."));
        if depth == 0 && w != "..." {
            args.push(w.to_string());
        }
        if closes && depth > 0 {
            depth -= 1;
        }
    }
    Some(args)
}

/// Every magnetfetch command in the fenced code blocks of a Markdown file.
fn from_markdown(path: &Path) -> Vec<Example> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    let mut first_line = 0;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            pending.clear();
            continue;
        }
        if !in_block {
            continue;
        }
        if pending.is_empty() {
            first_line = n + 1;
        }
        // A trailing backslash continues the command on the next line.
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        for args in commands_in(&pending) {
            out.push(Example {
                origin: format!("{}:{first_line}", path.display()),
                args,
            });
        }
        pending.clear();
    }
    out
}

/// Every `magnetfetch ...` line of every `--help` text, subcommands included.
fn from_help(cmd: &clap::Command, path: &str, out: &mut Vec<Example>) {
    for text in [cmd.get_after_help(), cmd.get_after_long_help()]
        .into_iter()
        .flatten()
    {
        for line in text.to_string().lines() {
            for args in commands_in(line.trim()) {
                out.push(Example {
                    origin: format!("`{path} --help`"),
                    args,
                });
            }
        }
    }
    for sub in cmd.get_subcommands() {
        from_help(sub, &format!("{path} {}", sub.get_name()), out);
    }
}

fn all_examples() -> Vec<Example> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<_> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut out: Vec<Example> = files.iter().flat_map(|f| from_markdown(f)).collect();
    from_help(&Cli::command(), "magnetfetch", &mut out);
    out
}

#[test]
fn shell_words_split_like_a_shell() {
    let words: Vec<String> = shell_words(r#"magnetfetch 'a b' "c\"d" e\ f # comment"#)
        .iter()
        .map(|w| w.replace(QUOTED, ""))
        .collect();
    assert_eq!(words, ["magnetfetch", "a b", "c\"d", "e f"]);
    assert_eq!(
        commands_in("magnetfetch dht serve --bind '[::1]:6881'"),
        [vec!["dht", "serve", "--bind", "[::1]:6881"]]
    );
    assert_eq!(
        commands_in("magnetfetch create d -o d.torrent > link.txt && magnetfetch info d.torrent"),
        [
            vec!["create", "d", "-o", "d.torrent"],
            vec!["info", "d.torrent"]
        ]
    );
    assert_eq!(
        commands_in(
            "magnetfetch create PATH -o OUT.torrent [--piece-length BYTES] [--tracker URL]..."
        ),
        [vec!["create", "PATH", "-o", "OUT.torrent"]]
    );
    assert_eq!(
        commands_in("cargo run --release -- \"magnet:?xt=urn:btih:...\""),
        [vec!["magnet:?xt=urn:btih:..."]]
    );
    assert!(commands_in("curl -O http://x/y.torrent").is_empty());
}

#[test]
fn every_documented_command_line_parses() {
    let examples = all_examples();
    // The guide alone shows a few dozen; finding few means the extraction broke.
    assert!(
        examples.len() >= 40,
        "only {} documented commands found",
        examples.len()
    );
    let origins: std::collections::BTreeSet<&str> = examples
        .iter()
        .map(|e| e.origin.split(':').next().unwrap_or(""))
        .collect();
    assert!(origins.iter().any(|o| o.ends_with("README.md")));
    assert!(origins.iter().any(|o| o.ends_with("guide.md")));
    assert!(
        origins.iter().any(|o| o.starts_with('`')),
        "no --help example found"
    );
    let mut failures = Vec::new();
    for ex in &examples {
        let argv = std::iter::once("magnetfetch".to_string()).chain(ex.args.iter().cloned());
        let parsed = std::panic::catch_unwind(|| Cli::try_parse_from(argv.clone()));
        match parsed {
            Ok(Ok(_)) => {}
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) => {}
            Ok(Err(e)) => failures.push(format!(
                "{}: magnetfetch {}: {}",
                ex.origin,
                ex.args.join(" "),
                e.to_string().lines().next().unwrap_or("")
            )),
            Err(_) => failures.push(format!(
                "{}: magnetfetch {}: the parser panicked",
                ex.origin,
                ex.args.join(" ")
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
