//! Pure: the status page's timeline as an inline SVG. One lane per policy
//! for its backups (coloured by trigger), then lanes for deploys (start ▲,
//! finish ■ green/red), drills (◆ passed/failed) and open alerts (a bar from
//! when they fired to now); release tags are dashed vertical lines. Every
//! mark has a `<title>` (hover text) and `data-*` attributes naming it; all
//! text is escaped here, the page embeds the result as is.

use std::fmt::Write as _;

use chrono::{DateTime, TimeDelta, Utc};

/// Something that happened, placed on the timeline.
#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    Backup {
        policy: String,
        id: String,
        trigger: String,
        at: DateTime<Utc>,
    },
    Release {
        tag: String,
        at: DateTime<Utc>,
    },
    Deploy {
        release: String,
        policy: String,
        /// `start` or `finish`.
        phase: String,
        /// `ok`/`success` or a failure.
        status: String,
        at: DateTime<Utc>,
    },
    Drill {
        policy: String,
        backup: String,
        passed: bool,
        at: DateTime<Utc>,
    },
    Alert {
        policy: String,
        reason: String,
        since: DateTime<Utc>,
    },
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The colour of a backup trigger (also used by the page's legend).
pub fn trigger_colour(trigger: &str) -> &'static str {
    match trigger {
        "schedule" => "#2b6cb0",
        "rpo" => "#805ad5",
        "release" => "#2c7a7b",
        "pre-deploy" => "#d69e2e",
        "post-deploy" => "#38a169",
        "forensic" => "#c53030",
        _ => "#4a5568",
    }
}

const WIDTH: f64 = 1000.0;
const LEFT: f64 = 110.0;
const LANE: f64 = 26.0;
const TOP: f64 = 24.0;

fn fmt_t(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn ok(status: &str) -> bool {
    matches!(status, "ok" | "success" | "succeeded" | "passed")
}

/// Where things go on the timeline: the window, its lanes and the mapping
/// of instants and lanes to coordinates.
struct Frame<'a> {
    from: DateTime<Utc>,
    now: DateTime<Utc>,
    /// The window's length in seconds (at least one).
    span: f64,
    /// Policy lanes, then `deploys`, `drills` and `alerts`.
    lanes: Vec<&'a str>,
}

impl<'a> Frame<'a> {
    fn new(policies: &'a [String], now: DateTime<Utc>, days: i64) -> Self {
        let from = now - TimeDelta::days(days);
        let mut lanes: Vec<&str> = policies.iter().map(String::as_str).collect();
        lanes.extend(["deploys", "drills", "alerts"]);
        Frame {
            from,
            now,
            span: (now - from).num_seconds().max(1) as f64,
            lanes,
        }
    }

    fn x(&self, t: DateTime<Utc>) -> f64 {
        let f = ((t - self.from).num_seconds() as f64 / self.span).clamp(0.0, 1.0);
        LEFT + f * (WIDTH - LEFT - 10.0)
    }

    /// The middle of `lane`.
    fn y(&self, lane: usize) -> f64 {
        TOP + LANE * lane as f64 + LANE / 2.0
    }

    fn inside(&self, t: DateTime<Utc>) -> bool {
        t >= self.from && t <= self.now
    }

    fn height(&self) -> f64 {
        TOP + LANE * self.lanes.len() as f64 + 22.0
    }

    /// The first lane named `policy`.
    fn lane_of(&self, policy: &str) -> Option<usize> {
        self.lanes.iter().position(|l| *l == policy)
    }

    fn deploys(&self) -> usize {
        self.lanes.len() - 3
    }

    fn drills(&self) -> usize {
        self.lanes.len() - 2
    }

    fn alerts(&self) -> usize {
        self.lanes.len() - 1
    }
}

/// The SVG for the window `[now - days, now]`; `policies` fixes the lanes.
pub fn render(policies: &[String], marks: &[Mark], now: DateTime<Utc>, days: i64) -> String {
    let frame = Frame::new(policies, now, days);
    let height = frame.height();
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="timeline" role="img" aria-label="timeline of the last {days} days" viewBox="0 0 {WIDTH} {height}" width="100%" xmlns="http://www.w3.org/2000/svg">"#
    );
    lanes(&mut s, &frame);
    day_ticks(&mut s, &frame, days);
    for m in marks {
        mark(&mut s, m, &frame);
    }
    s.push_str("</svg>");
    s
}

/// One striped band per lane, its name on the left.
fn lanes(s: &mut String, frame: &Frame<'_>) {
    for (i, name) in frame.lanes.iter().enumerate() {
        let _ = write!(
            s,
            r##"<rect x="0" y="{}" width="{WIDTH}" height="{LANE}" fill="{}"/><text x="4" y="{}" class="lane">{}</text>"##,
            TOP + LANE * i as f64,
            if i % 2 == 0 { "#f7fafc" } else { "#edf2f7" },
            frame.y(i) + 4.0,
            escape(&short_name(name)),
        );
    }
}

/// Day ticks, about six of them.
fn day_ticks(s: &mut String, frame: &Frame<'_>, days: i64) {
    let height = frame.height();
    let step = (days / 6).max(1);
    let mut d = 0;
    while d <= days {
        let t = frame.from + TimeDelta::days(d);
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#cbd5e0"/><text x="{0:.1}" y="{3}" class="tick">{4}</text>"##,
            frame.x(t),
            TOP,
            height - 20.0,
            height - 6.0,
            t.format("%m-%d")
        );
        d += step;
    }
}

fn short_name(name: &str) -> String {
    if name.chars().count() > 14 {
        name.chars().take(13).collect::<String>() + "…"
    } else {
        name.to_string()
    }
}

/// Draws `m` when it falls inside the window (an open alert always does:
/// its bar runs from when it fired, clamped to the window, to now).
fn mark(s: &mut String, m: &Mark, frame: &Frame<'_>) {
    match m {
        Mark::Backup {
            policy,
            id,
            trigger,
            at,
        } => {
            if let Some(lane) = frame.lane_of(policy)
                && frame.inside(*at)
            {
                backup(s, frame, lane, id, trigger, *at);
            }
        }
        Mark::Release { tag, at } if frame.inside(*at) => release(s, frame, tag, *at),
        Mark::Deploy {
            release,
            policy,
            phase,
            status,
            at,
        } if frame.inside(*at) => deploy(s, frame, release, policy, phase, status, *at),
        Mark::Drill {
            policy,
            backup,
            passed,
            at,
        } if frame.inside(*at) => drill(s, frame, policy, backup, *passed, *at),
        Mark::Alert {
            policy,
            reason,
            since,
        } => alert(s, frame, policy, reason, *since),
        _ => {}
    }
}

/// A dot in the policy's lane, coloured by trigger, linking to the backup.
fn backup(
    s: &mut String,
    frame: &Frame<'_>,
    lane: usize,
    id: &str,
    trigger: &str,
    at: DateTime<Utc>,
) {
    let _ = write!(
        s,
        r#"<a href="/backups/{}"><circle class="mark backup" data-kind="backup" data-trigger="{}" cx="{:.1}" cy="{}" r="5" fill="{}"><title>backup {} ({}) {}</title></circle></a>"#,
        escape(id),
        escape(trigger),
        frame.x(at),
        frame.y(lane),
        trigger_colour(trigger),
        escape(id),
        escape(trigger),
        fmt_t(at)
    );
}

/// A dashed vertical line across every lane, the tag on top.
fn release(s: &mut String, frame: &Frame<'_>, tag: &str, at: DateTime<Utc>) {
    let _ = write!(
        s,
        r##"<g class="mark release" data-kind="release"><line x1="{0:.1}" x2="{0:.1}" y1="{1}" y2="{2}" stroke="#2c7a7b" stroke-dasharray="4 3"/><text x="{0:.1}" y="{3}" class="tag">{4}</text><title>release {4} {5}</title></g>"##,
        frame.x(at),
        TOP,
        frame.y(frame.alerts()) + LANE / 2.0,
        TOP - 8.0,
        escape(tag),
        fmt_t(at)
    );
}

/// ▲ for a start, ■ for a finish; green when it went well, else red.
fn deploy(
    s: &mut String,
    frame: &Frame<'_>,
    release: &str,
    policy: &str,
    phase: &str,
    status: &str,
    at: DateTime<Utc>,
) {
    let (cx, cy) = (frame.x(at), frame.y(frame.deploys()));
    let colour = if ok(status) { "#38a169" } else { "#c53030" };
    let shape = if phase == "start" {
        format!(
            r#"<polygon points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{colour}"/>"#,
            cx,
            cy - 7.0,
            cx - 6.0,
            cy + 5.0,
            cx + 6.0,
            cy + 5.0
        )
    } else {
        format!(
            r#"<rect x="{:.1}" y="{:.1}" width="11" height="11" fill="{colour}"/>"#,
            cx - 5.5,
            cy - 5.5
        )
    };
    let _ = write!(
        s,
        r#"<g class="mark deploy" data-kind="deploy-{}" data-status="{}" data-release="{}">{shape}<title>deploy {} {} of {}: {} ({})</title></g>"#,
        escape(phase),
        escape(status),
        escape(release),
        escape(release),
        escape(phase),
        escape(policy),
        escape(status),
        fmt_t(at)
    );
}

/// ◆, green when the drill passed, else red.
fn drill(
    s: &mut String,
    frame: &Frame<'_>,
    policy: &str,
    backup: &str,
    passed: bool,
    at: DateTime<Utc>,
) {
    let (cx, cy) = (frame.x(at), frame.y(frame.drills()));
    let (colour, verdict) = if passed {
        ("#38a169", "passed")
    } else {
        ("#c53030", "failed")
    };
    let _ = write!(
        s,
        r#"<polygon class="mark drill" data-kind="drill" data-verdict="{verdict}" points="{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="{colour}"><title>drill of {} ({}) {verdict} {}</title></polygon>"#,
        cx,
        cy - 6.0,
        cx + 6.0,
        cy,
        cx,
        cy + 6.0,
        cx - 6.0,
        cy,
        escape(policy),
        escape(backup),
        fmt_t(at)
    );
}

/// A red bar from when the alert fired to now (at least 4 wide).
fn alert(s: &mut String, frame: &Frame<'_>, policy: &str, reason: &str, since: DateTime<Utc>) {
    let x0 = frame.x(since);
    let _ = write!(
        s,
        r##"<rect class="mark alert" data-kind="alert" x="{:.1}" y="{:.1}" width="{:.1}" height="10" rx="3" fill="#e53e3e"><title>alert {} {} since {}</title></rect>"##,
        x0,
        frame.y(frame.alerts()) - 5.0,
        (frame.x(frame.now) - x0).max(4.0),
        escape(if policy.is_empty() {
            "repository"
        } else {
            policy
        }),
        escape(reason),
        fmt_t(since)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_are_placed_escaped_and_out_of_window_ones_left_out() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let marks = vec![
            Mark::Deploy {
                release: "v1<2>".into(),
                policy: "orders".into(),
                phase: "finish".into(),
                status: "failure".into(),
                at: now - TimeDelta::hours(2),
            },
            Mark::Backup {
                policy: "orders".into(),
                id: "old".into(),
                trigger: "schedule".into(),
                at: now - TimeDelta::days(40),
            },
        ];
        let svg = render(&["orders".into()], &marks, now, 30);
        assert!(
            svg.contains(r#"data-kind="deploy-finish" data-status="failure""#),
            "{svg}"
        );
        assert!(svg.contains("v1&lt;2&gt;"), "{svg}");
        assert!(!svg.contains("v1<2>"));
        assert!(!svg.contains("/backups/old"), "40 days ago is outside 30");
    }
}
