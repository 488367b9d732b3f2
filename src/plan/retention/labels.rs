//! Pure: retention's labels of buckets (`2026-11-29 14:00`, `2026-W48`).
//!
//! Labels are built by hand: hundreds of thousands of them per plan at fleet
//! scale, and `format!` costs several times more.

use chrono::{DateTime, Datelike, NaiveDate, Utc};

fn push_num(s: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let digits = buf.len() - i;
    for _ in digits..width {
        s.push('0');
    }
    for &c in &buf[i..] {
        s.push(char::from(c));
    }
}

fn push_year(s: &mut String, year: i32) {
    if year < 0 {
        s.push('-');
    }
    push_num(s, year.unsigned_abs(), 4);
}

pub(super) fn label_year(year: i32) -> String {
    let mut s = String::with_capacity(6);
    push_year(&mut s, year);
    s
}

pub(super) fn label_month(d: NaiveDate) -> String {
    let mut s = String::with_capacity(8);
    push_year(&mut s, d.year());
    s.push('-');
    push_num(&mut s, d.month(), 2);
    s
}

pub(super) fn label_day(d: NaiveDate) -> String {
    let mut s = String::with_capacity(10);
    push_year(&mut s, d.year());
    s.push('-');
    push_num(&mut s, d.month(), 2);
    s.push('-');
    push_num(&mut s, d.day(), 2);
    s
}

pub(super) fn label_hour(at: DateTime<Utc>) -> String {
    use chrono::Timelike;
    let mut s = label_day(at.date_naive());
    s.reserve(6);
    s.push(' ');
    push_num(&mut s, at.hour(), 2);
    s.push_str(":00");
    s
}

pub(super) fn label_week(d: NaiveDate) -> String {
    let w = d.iso_week();
    let mut s = String::with_capacity(8);
    push_year(&mut s, w.year());
    s.push_str("-W");
    push_num(&mut s, w.week(), 2);
    s
}
