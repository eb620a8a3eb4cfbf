//! Result tables: printed to the terminal and written into marked blocks of BENCHMARKS.md, so a
//! run of one scenario replaces only its own block and hand-written analysis stays.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

/// Outcome of one row against its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Target met.
    Pass,
    /// Target missed.
    Fail,
    /// A figure without a target.
    Info,
}

impl Verdict {
    /// PASS/FAIL/— .
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "—",
        }
    }

    /// Pass when `ok`.
    pub fn from_bool(ok: bool) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail
        }
    }
}

/// One line of a result table.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub metric: String,
    /// The figure: median (min–max, n).
    pub value: String,
    /// The ceiling measured in the same run (or baseline), if any.
    pub ceiling: String,
    /// value / ceiling, if meaningful.
    pub ratio: String,
    /// The target.
    pub target: String,
    /// PASS/FAIL.
    pub verdict: Verdict,
}

impl Row {
    /// A row without ceiling or target.
    pub fn info(metric: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            metric: metric.into(),
            value: value.into(),
            ceiling: String::new(),
            ratio: String::new(),
            target: String::new(),
            verdict: Verdict::Info,
        }
    }
}

/// The results of one scenario.
#[derive(Clone, Debug)]
pub struct Section {
    /// Block key in BENCHMARKS.md (`ingest`, `e2e`, ...).
    pub key: &'static str,
    /// Heading.
    pub title: String,
    /// Result rows.
    pub rows: Vec<Row>,
    /// Notes printed under the table (method, caveats).
    pub notes: Vec<String>,
    /// Wall time the scenario took, seconds.
    pub seconds: f64,
}

impl Section {
    /// An empty section.
    pub fn new(key: &'static str, title: impl Into<String>) -> Self {
        Self { key, title: title.into(), rows: Vec::new(), notes: Vec::new(), seconds: 0.0 }
    }

    /// A section saying the scenario did not run and why.
    pub fn not_run(key: &'static str, title: impl Into<String>, why: impl Into<String>) -> Self {
        let mut s = Self::new(key, title);
        s.rows.push(Row::info("not run", why));
        s
    }

    /// Number of rows that failed their target.
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|r| r.verdict == Verdict::Fail).count()
    }

    /// Plain-text table for the terminal.
    pub fn to_text(&self) -> String {
        let header = ["metric", "value", "ceiling/baseline", "ratio", "target", ""];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.metric.clone(),
                    r.value.clone(),
                    r.ceiling.clone(),
                    r.ratio.clone(),
                    r.target.clone(),
                    r.verdict.label().to_owned(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &cells {
            for (w, c) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = format!("\n== {} ({:.0} s)\n", self.title, self.seconds);
        let line = |cols: &[String]| {
            let mut s = String::new();
            for (c, w) in cols.iter().zip(widths.iter()) {
                let pad = w.saturating_sub(c.chars().count());
                let _ = write!(s, "{c}{}  ", " ".repeat(pad));
            }
            s.trim_end().to_owned()
        };
        out.push_str(&line(&header.map(str::to_owned)));
        out.push('\n');
        for row in &cells {
            out.push_str(&line(row));
            out.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(out, "  * {n}");
        }
        out
    }

    /// Markdown block for BENCHMARKS.md (without the markers).
    pub fn to_markdown(&self, run: &str) -> String {
        let mut out = format!("### {}\n\n{run}, scenario wall time {:.0} s.\n\n", self.title, self.seconds);
        out.push_str("| Metric | Value (median (min–max, n)) | Ceiling / baseline | Ratio | Target | |\n");
        out.push_str("| --- | --- | --- | --- | --- | --- |\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                esc(&r.metric),
                esc(&r.value),
                esc(&r.ceiling),
                esc(&r.ratio),
                esc(&r.target),
                r.verdict.label()
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "* {n}");
            }
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The scenario blocks in the order they appear in BENCHMARKS.md.
pub const BLOCK_ORDER: [&str; 11] =
    ["env", "ingest", "e2e", "noisy", "fleet", "memory", "spool", "budget", "console", "slowbridge", "accounts"];

const SKELETON_HEAD: &str = "# Benchmarks\n\n\
Generated by `cargo run --release -p wafleet-bench -- all` (see [bench/README.md](bench/README.md)). \
The blocks between `<!-- bench:... -->` markers are rewritten by each run of their scenario; \
everything else is hand-written.\n\n";

/// Replaces (or appends) the marked block `key` of the file at `path` with `body`.
pub fn write_block(path: &Path, key: &str, body: &str) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => SKELETON_HEAD.to_owned(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let updated = replace_block(&existing, key, body);
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, updated).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    Ok(())
}

fn markers(key: &str) -> (String, String) {
    (format!("<!-- bench:{key}:begin -->"), format!("<!-- bench:{key}:end -->"))
}

/// Replaces the block between the markers of `key`; a missing block is inserted before the
/// first block that comes after it in [`BLOCK_ORDER`], else after the last block that comes
/// before it (so a new last scenario lands beside the others, not under the hand-written
/// analysis that follows them), or appended.
pub fn replace_block(text: &str, key: &str, body: &str) -> String {
    let (begin, end) = markers(key);
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    if let (Some(b), Some(e)) = (text.find(&begin), text.find(&end)) {
        if b < e {
            return format!("{}{}{}", &text[..b], block, &text[e + end.len()..]);
        }
    }
    let later = BLOCK_ORDER.iter().skip_while(|k| **k != key).skip(1);
    for k in later {
        let (next_begin, _) = markers(k);
        if let Some(at) = text.find(&next_begin) {
            return format!("{}{}\n\n{}", &text[..at], block, &text[at..]);
        }
    }
    let earlier = BLOCK_ORDER.iter().take_while(|k| **k != key);
    let before = earlier.filter_map(|k| text.find(&markers(k).1).map(|at| at + markers(k).1.len())).max();
    if let Some(at) = before.filter(|_| BLOCK_ORDER.contains(&key)) {
        return format!("{}\n\n{}{}", &text[..at], block, &text[at..]);
    }
    let mut out = text.trim_end().to_owned();
    out.push_str("\n\n");
    out.push_str(&block);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_replaced_in_place_and_inserted_in_order() {
        let text = "head\n\n<!-- bench:e2e:begin -->\nold\n<!-- bench:e2e:end -->\n\ntail\n";
        let replaced = replace_block(text, "e2e", "new");
        assert_eq!(replaced, "head\n\n<!-- bench:e2e:begin -->\nnew\n<!-- bench:e2e:end -->\n\ntail\n");
        let inserted = replace_block(&replaced, "ingest", "first");
        assert!(inserted.find("bench:ingest:begin") < inserted.find("bench:e2e:begin"));
        // No later block: after the last earlier one, above the hand-written text that follows.
        let placed = replace_block(&inserted, "budget", "later");
        assert!(placed.find("bench:e2e:end") < placed.find("bench:budget:begin"));
        assert!(placed.find("bench:budget:end") < placed.find("tail"), "{placed}");
        let appended = replace_block("head\n", "budget", "only");
        assert!(appended.trim_end().ends_with("<!-- bench:budget:end -->"));
    }
}
