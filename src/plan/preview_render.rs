//! Pure: a `Preview` as Markdown, fit for a pull-request comment (GitHub
//! and GitLab render it). Every list is cut at `MAX_ROWS` rows followed by
//! "… and N more", so a comment stays well under the 65,536-character limit
//! of both whatever the size of the change; the JSON (`--output json`, the
//! API) lists everything. Deletions are summarised per policy (count, how
//! many the change causes, the proposed rules: policies with deletions the
//! change causes first), then the first rows, those the change causes
//! first; the guard lists the refused consequences first.

use std::fmt::Write as _;

use super::preview::{Change, Deletion, PolicyDeletions, Preview};
use super::render::Instant;

/// Detail rows per list before "… and N more".
pub(super) const MAX_ROWS: usize = 40;

fn change(c: Change) -> &'static str {
    match c {
        Change::Added => "added",
        Change::Removed => "removed",
        Change::Changed => "changed",
    }
}

fn at(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map_or_else(|| "-".to_string(), |t| Instant(t).to_string())
}

/// Escapes what would break a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn more(out: &mut String, total: usize) {
    if total > MAX_ROWS {
        let _ = writeln!(
            out,
            "\n… and {} more (all of them in `--output json`)",
            total - MAX_ROWS
        );
    }
}

impl Preview {
    /// Markdown with `title` (e.g. the commits compared) as its heading.
    pub fn markdown(&self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### safepoint preview: {title}\n");
        self.guard_section(&mut out);
        if self.is_quiet() {
            out.push_str(
                "No change to the policies' effect: nothing is taken, deleted or orphaned.\n",
            );
            return out;
        }
        self.policies_section(&mut out);
        self.deletions_section(&mut out);
        self.backups_section(&mut out);
        self.schedules_section(&mut out);
        self.orphans_section(&mut out);
        for (heading, list) in [
            ("Drills", &self.drills),
            ("Storages", &self.storages),
            ("Notifiers", &self.notifiers),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(out, "#### {heading}\n");
            for c in list {
                let _ = writeln!(out, "- `{}` {}", c.name, change(c.change));
            }
            out.push('\n');
        }
        out
    }

    fn is_quiet(&self) -> bool {
        self.policies.is_empty()
            && self.storages.is_empty()
            && self.notifiers.is_empty()
            && self.deletions.is_empty()
            && self.backups.is_empty()
            && self.orphaned.is_empty()
    }

    fn guard_section(&self, out: &mut String) {
        if self.refused() {
            out.push_str("**Refused: destructive change not acknowledged.** The daemon will not apply this revision as it is.\n\n");
        } else if self.guard.is_empty() {
            out.push_str("Guard: nothing destructive.\n\n");
        } else {
            out.push_str("Guard: every destructive consequence is acknowledged.\n\n");
        }
        let refused = self.guard.iter().filter(|g| !g.acknowledged);
        let acknowledged = self.guard.iter().filter(|g| g.acknowledged);
        for g in refused.chain(acknowledged).take(MAX_ROWS) {
            let mark = if g.acknowledged { "ok" } else { "**REFUSED**" };
            let _ = writeln!(out, "- {mark}: {}", cell(&g.message));
        }
        more(out, self.guard.len());
        if !self.guard.is_empty() {
            out.push('\n');
        }
    }

    fn policies_section(&self, out: &mut String) {
        if self.policies.is_empty() {
            return;
        }
        out.push_str("#### Policies\n\n| policy | change | details |\n|---|---|---|\n");
        for p in self.policies.iter().take(MAX_ROWS) {
            let details = match (&p.renamed, p.change) {
                (Some(r), Change::Added) => format!("looks renamed from `{r}` (same source)"),
                (Some(r), _) => format!("looks renamed to `{r}` (same source)"),
                (None, _) => p
                    .fields
                    .iter()
                    .map(|f| format!("`{}`: {} → {}", f.field, f.before, f.after))
                    .collect::<Vec<_>>()
                    .join("<br>"),
            };
            let _ = writeln!(
                out,
                "| `{}` | {} | {} |",
                p.policy,
                change(p.change),
                cell(&details)
            );
        }
        more(out, self.policies.len());
        out.push('\n');
    }

    fn deletions_section(&self, out: &mut String) {
        if self.deletions.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "#### Deletions: {} backup(s) of {} policies, {} caused by this change\n",
            self.deletion_count(),
            self.deletions.len(),
            self.caused_count()
        );
        out.push_str(
            "| policy | deleted | caused by this change | proposed rules |\n|---|---|---|---|\n",
        );
        let caused = |p: &&PolicyDeletions| p.caused > 0;
        let (first, rest) = (
            self.deletions.iter().filter(caused),
            self.deletions.iter().filter(|p| p.caused == 0),
        );
        for p in first.chain(rest).take(MAX_ROWS) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                p.policy,
                p.count,
                p.caused,
                cell(&p.rules)
            );
        }
        more(out, self.deletions.len());
        out.push_str("\n| policy | backup | started | kept today by | caused by this change |\n|---|---|---|---|---|\n");
        let caused = self.all_deletions().filter(|(_, d)| d.caused_by_change);
        let pending = self.all_deletions().filter(|(_, d)| !d.caused_by_change);
        for (policy, d) in caused.chain(pending).take(MAX_ROWS) {
            deletion_row(out, policy, d);
        }
        more(out, self.deletion_count());
        out.push('\n');
    }

    fn backups_section(&self, out: &mut String) {
        if self.backups.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "#### Backups taken at the next cycle: {}\n",
            self.backups.len()
        );
        for b in self.backups.iter().take(MAX_ROWS) {
            let why = if b.caused_by_change {
                ""
            } else {
                " (due anyway)"
            };
            let _ = writeln!(
                out,
                "- `{}` {}: {}{why}",
                b.policy,
                b.trigger,
                cell(&b.reason.to_string())
            );
        }
        more(out, self.backups.len());
        out.push('\n');
    }

    fn schedules_section(&self, out: &mut String) {
        if self.schedules.is_empty() {
            return;
        }
        out.push_str("#### Schedules\n\n| policy | before | next run before | after | next run after |\n|---|---|---|---|---|\n");
        for s in self.schedules.iter().take(MAX_ROWS) {
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                s.policy,
                cell(s.before.as_deref().unwrap_or("-")),
                at(s.next_before),
                cell(s.after.as_deref().unwrap_or("-")),
                at(s.next_after)
            );
        }
        more(out, self.schedules.len());
        out.push('\n');
    }

    fn orphans_section(&self, out: &mut String) {
        if self.orphaned.is_empty() {
            return;
        }
        out.push_str("#### Orphaned history\n\n");
        for o in self.orphaned.iter().take(MAX_ROWS) {
            let renamed = o.renamed_to.as_ref().map_or(String::new(), |r| {
                format!(", looks renamed to `{r}` (which starts a new history)")
            });
            let _ = writeln!(
                out,
                "- `{}`: {} backup(s), newest {}{renamed}",
                o.policy,
                o.backups,
                at(o.newest)
            );
        }
        more(out, self.orphaned.len());
        out.push('\n');
    }
}

fn deletion_row(out: &mut String, policy: &str, d: &Deletion) {
    let reasons: Vec<String> = d.kept_today_by.iter().map(ToString::to_string).collect();
    let mut kept = reasons.join(", ");
    if d.newest_verified {
        kept.push_str(" (**newest verified**)");
    }
    let _ = writeln!(
        out,
        "| `{policy}` | `{}` | {} | {} | {} |",
        d.backup_id,
        Instant(d.started_at),
        cell(if kept.is_empty() { "-" } else { &kept }),
        if d.caused_by_change {
            "yes"
        } else {
            "no (already pending)"
        }
    );
}
