//! Pure: the human text of a plan (`safepoint plan`), one line per decision.

use std::fmt::{self, Display, Formatter, Write as _};

use chrono::{DateTime, Utc};

use crate::plan::{Action, KeepReason, Plan, Reason};

/// `2026-11-25 06:00 UTC` (seconds shown only when not zero).
pub(crate) struct Instant(pub DateTime<Utc>);

impl Display for Instant {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.0.timestamp().rem_euclid(60) == 0 {
            write!(f, "{} UTC", self.0.format("%Y-%m-%d %H:%M"))
        } else {
            write!(f, "{} UTC", self.0.format("%Y-%m-%d %H:%M:%S"))
        }
    }
}

/// `7h 12m`, `2d 3h`, `45s`: the two most significant non-zero units.
pub(crate) struct Span(pub i64);

impl Display for Span {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut secs = self.0;
        if secs < 0 {
            f.write_str("-")?;
            secs = -secs;
        }
        let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
        let mut shown = 0;
        for (size, unit) in units {
            let n = secs / size;
            secs %= size;
            if n > 0 && shown < 2 {
                if shown > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{n}{unit}")?;
                shown += 1;
            } else if shown > 0 {
                // Stop after a gap: "1d 3m" would read oddly, "1d" is enough.
                shown = 2;
            }
        }
        if shown == 0 {
            f.write_str("0s")?;
        }
        Ok(())
    }
}

impl Display for Reason {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Reason::FirstBackup => {
                f.write_str("first backup: the policy has no verified backup yet")
            }
            Reason::ScheduleDue { slot } => write!(
                f,
                "backup due by schedule: slot {} passed with no backup since",
                Instant(*slot)
            ),
            Reason::RpoMissed {
                newest,
                rpo_seconds,
                age_seconds,
            } => match (newest, age_seconds) {
                (Some(_), Some(age)) => write!(
                    f,
                    "rpo missed: newest good backup is {} old, rpo is {}",
                    Span(*age),
                    Span(*rpo_seconds)
                ),
                _ => write!(
                    f,
                    "rpo missed: no good backup, rpo is {}",
                    Span(*rpo_seconds)
                ),
            },
            Reason::Retry {
                failed_at,
                consecutive,
            } => {
                let plural = if *consecutive == 1 { "" } else { "s" };
                write!(
                    f,
                    "retry: backoff after {consecutive} consecutive failure{plural} \
                     (last at {}) elapsed",
                    Instant(*failed_at)
                )
            }
            Reason::Requested { by } => write!(f, "requested by {by}"),
            Reason::NotRetained { rules } => {
                write!(f, "not kept by any retention rule ({rules})")
            }
            Reason::OrphanPruned => {
                f.write_str("policy deleted from Git, pruned by `safepoint prune --orphans`")
            }
            Reason::DrillDue { slot } => write!(
                f,
                "drill due by schedule: slot {} passed with no drill since",
                Instant(*slot)
            ),
        }
    }
}

/// `kept: daily 2026-11-24`. The alternate form (`{:#}`) leaves out the
/// `kept: ` prefix, for lists of reasons.
impl Display for KeepReason {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            f.write_str("kept: ")?;
        }
        match self {
            KeepReason::Last { n } => write!(f, "last #{n}"),
            KeepReason::Hourly { bucket } => write!(f, "hourly {bucket}"),
            KeepReason::Daily { bucket } => write!(f, "daily {bucket}"),
            KeepReason::Weekly { bucket } => write!(f, "weekly {bucket}"),
            KeepReason::Monthly { bucket } => write!(f, "monthly {bucket}"),
            KeepReason::Yearly { bucket } => write!(f, "yearly {bucket}"),
            KeepReason::Release { tag } => write!(f, "release {tag}"),
            KeepReason::Pinned { why } => write!(f, "pinned ({why})"),
            KeepReason::PinUnknown { why } => write!(f, "pin state unknown ({why})"),
            KeepReason::NewestVerified => f.write_str("newest verified backup"),
            KeepReason::Orphaned => f.write_str(
                "orphaned by deleted policy (run `safepoint prune --orphans` to delete)",
            ),
            KeepReason::StorageIncomplete => {
                f.write_str("storage listing incomplete, nothing pruned this cycle")
            }
            KeepReason::Unhealthy => f.write_str("missing or corrupt, never deleted automatically"),
            KeepReason::Suspended => f.write_str("policy suspended, nothing pruned"),
            KeepReason::Running => f.write_str("backup running, pruning waits"),
        }
    }
}

impl Plan {
    /// The text of `safepoint plan`: actions, then kept backups, then notes.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.actions.is_empty() && self.drills.is_empty() {
            out.push_str("nothing to do\n");
        }
        for action in &self.actions {
            match action {
                Action::Backup {
                    policy,
                    trigger,
                    release,
                    reason,
                } => {
                    let _ = write!(out, "backup {policy} [{trigger}");
                    if let Some(release) = release {
                        let _ = write!(out, " {release}");
                    }
                    let _ = writeln!(out, "] — {reason}");
                }
                Action::Delete {
                    policy,
                    backup_id,
                    reason,
                    ..
                } => {
                    let _ = writeln!(out, "delete {policy}/{backup_id} — {reason}");
                }
            }
        }
        for drill in &self.drills {
            let _ = writeln!(
                out,
                "drill {}/{} — {}",
                drill.policy, drill.backup_id, drill.reason
            );
        }
        for kept in &self.kept {
            let _ = write!(out, "keep {}/{} — ", kept.policy, kept.backup_id);
            for (i, reason) in kept.reasons.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{reason:#}");
            }
            out.push('\n');
        }
        for note in &self.notes {
            if note.policy.is_empty() {
                let _ = writeln!(out, "note: {}", note.text);
            } else {
                let _ = writeln!(out, "note {}: {}", note.policy, note.text);
            }
        }
        if let Some(at) = self.next_wakeup {
            let _ = writeln!(out, "next wakeup: {}", Instant(at));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_show_two_units() {
        assert_eq!(Span(7 * 3600 + 12 * 60).to_string(), "7h 12m");
        assert_eq!(Span(6 * 3600).to_string(), "6h");
        assert_eq!(Span(2 * 86_400 + 3 * 3600 + 5).to_string(), "2d 3h");
        assert_eq!(Span(86_400 + 180).to_string(), "1d");
        assert_eq!(Span(45).to_string(), "45s");
        assert_eq!(Span(0).to_string(), "0s");
    }

    #[test]
    fn keep_reasons_read_as_sentences() {
        assert_eq!(KeepReason::Last { n: 2 }.to_string(), "kept: last #2");
        let daily = KeepReason::Daily {
            bucket: "2026-11-24".into(),
        };
        assert_eq!(daily.to_string(), "kept: daily 2026-11-24");
        assert_eq!(format!("{daily:#}"), "daily 2026-11-24");
        let pinned = KeepReason::Pinned {
            why: "failed deploy v1.4.0".into(),
        };
        assert_eq!(pinned.to_string(), "kept: pinned (failed deploy v1.4.0)");
        assert_eq!(
            KeepReason::NewestVerified.to_string(),
            "kept: newest verified backup"
        );
        assert_eq!(
            KeepReason::Orphaned.to_string(),
            "kept: orphaned by deleted policy (run `safepoint prune --orphans` to delete)"
        );
    }

    #[test]
    fn reasons_read_as_sentences() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let due = Reason::ScheduleDue {
            slot: at("2026-11-25T06:00:00Z"),
        };
        assert_eq!(
            due.to_string(),
            "backup due by schedule: slot 2026-11-25 06:00 UTC passed with no backup since"
        );
        let rpo = Reason::RpoMissed {
            newest: Some(at("2026-11-25T00:00:00Z")),
            rpo_seconds: 6 * 3600,
            age_seconds: Some(7 * 3600 + 12 * 60),
        };
        assert_eq!(
            rpo.to_string(),
            "rpo missed: newest good backup is 7h 12m old, rpo is 6h"
        );
        let gone = Reason::NotRetained {
            rules: "keepLast=3, keepDaily=7".into(),
        };
        assert_eq!(
            gone.to_string(),
            "not kept by any retention rule (keepLast=3, keepDaily=7)"
        );
    }

    #[test]
    fn empty_plan_says_nothing_to_do() {
        assert_eq!(Plan::default().render(), "nothing to do\n");
    }
}
