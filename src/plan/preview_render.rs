//! Pure: a `Preview` as Markdown, fit for a pull-request comment (GitHub
//! and GitLab render it; long lists are cut so a comment stays well under
//! the 65,536-character limit of both).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::preview::{Change, Deletion, Preview};
use super::render::Instant;

/// Detail rows per list before "... and N more".
const MAX_ROWS: usize = 40;

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
        let _ = writeln!(out, "\n… and {} more", total - MAX_ROWS);
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
        for g in &self.guard {
            let mark = if g.acknowledged { "ok" } else { "**REFUSED**" };
            let _ = writeln!(out, "- {mark}: {}", cell(&g.message));
        }
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
        let caused = self.caused_deletions().count();
        let _ = writeln!(
            out,
            "#### Deletions: {} backup(s), {caused} caused by this change\n",
            self.deletions.len()
        );
        let mut per_policy: BTreeMap<&str, Vec<&Deletion>> = BTreeMap::new();
        for d in &self.deletions {
            per_policy.entry(d.policy.as_str()).or_default().push(d);
        }
        for (policy, list) in &per_policy {
            let _ = writeln!(
                out,
                "- `{policy}`: {} backup(s), proposed rules {}",
                list.len(),
                list[0].rules
            );
        }
        out.push_str("\n| policy | backup | started | kept today by | caused by this change |\n|---|---|---|---|---|\n");
        for d in self.deletions.iter().take(MAX_ROWS) {
            let reasons: Vec<String> = d.kept_today_by.iter().map(ToString::to_string).collect();
            let mut kept = reasons.join(", ");
            if d.newest_verified {
                kept.push_str(" (**newest verified**)");
            }
            let _ = writeln!(
                out,
                "| `{}` | `{}` | {} | {} | {} |",
                d.policy,
                d.backup_id,
                at(d.started_at),
                cell(if kept.is_empty() { "-" } else { &kept }),
                if d.caused_by_change {
                    "yes"
                } else {
                    "no (already pending)"
                }
            );
        }
        more(out, self.deletions.len());
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
