//! Work calendars: weekly rest days (per tenant, with per-employee override),
//! China's statutory holidays and adjusted workdays (调休) from shipped data,
//! approved leave, and the watermark that says when a day may be judged.
//!
//! Adding a year is a data change: a new `holidays/cn-YYYY.toml` listed in
//! [`SHIPPED`]. A calendar that lacks a year says so ([`HolidayCalendar::covers`])
//! so the caller can warn, while weekly rest days still apply.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

/// The holiday data shipped with rollcall, one file per year.
pub const SHIPPED: &[(&str, &str)] = &[("cn-2026.toml", include_str!("holidays/cn-2026.toml"))];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalendarError {
    #[error("holiday data {source_name}: {message}")]
    Data {
        source_name: String,
        message: String,
    },
    #[error("`{0}` is not a weekday (use mon, tue, wed, thu, fri, sat, sun)")]
    Weekday(String),
}

/// One year of statutory holidays and adjusted workdays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HolidayYear {
    pub year: i32,
    holidays: BTreeSet<NaiveDate>,
    adjusted_workdays: BTreeSet<NaiveDate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawYear {
    year: i32,
    #[serde(default)]
    adjusted_workdays: Vec<NaiveDate>,
    #[serde(default)]
    holidays: Vec<RawRange>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    from: NaiveDate,
    to: NaiveDate,
}

impl HolidayYear {
    /// Parses one year's data (the format of `holidays/cn-2026.toml`).
    pub fn parse(source_name: &str, text: &str) -> Result<HolidayYear, CalendarError> {
        let err = |message: String| CalendarError::Data {
            source_name: source_name.to_owned(),
            message,
        };
        let raw: RawYear = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let in_year = |d: &NaiveDate| d.year() == raw.year;
        let mut holidays = BTreeSet::new();
        for r in &raw.holidays {
            if r.to < r.from {
                return Err(err(format!(
                    "holiday {} to {} ends before it starts",
                    r.from, r.to
                )));
            }
            // A holiday may run into the next year (New Year's Eve); its start must be in this year.
            if !in_year(&r.from) {
                return Err(err(format!(
                    "holiday starting {} is not in {}",
                    r.from, raw.year
                )));
            }
            holidays.extend(r.from.iter_days().take_while(|d| *d <= r.to));
        }
        let adjusted_workdays: BTreeSet<NaiveDate> = raw.adjusted_workdays.into_iter().collect();
        if let Some(d) = adjusted_workdays.iter().find(|d| !in_year(d)) {
            return Err(err(format!("adjusted workday {d} is not in {}", raw.year)));
        }
        if let Some(d) = adjusted_workdays.intersection(&holidays).next() {
            return Err(err(format!(
                "{d} is both a holiday and an adjusted workday"
            )));
        }
        Ok(HolidayYear {
            year: raw.year,
            holidays,
            adjusted_workdays,
        })
    }
}

/// Statutory holidays and adjusted workdays for the years it knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolidayCalendar {
    years: BTreeMap<i32, HolidayYear>,
}

/// What the statutory calendar says about a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statutory {
    /// A public holiday (法定节假日): nobody is expected at work.
    Holiday,
    /// A weekend day that is a workday by the holiday notice (调休上班).
    AdjustedWorkday,
    /// Nothing special: the weekly rest days decide.
    Ordinary,
    /// The calendar has no data for this year: the weekly rest days decide,
    /// and the caller should warn.
    Unknown,
}

impl HolidayCalendar {
    /// The data shipped with rollcall.
    pub fn shipped() -> Result<HolidayCalendar, CalendarError> {
        let mut cal = HolidayCalendar::default();
        for (name, text) in SHIPPED {
            cal.set_year(HolidayYear::parse(name, text)?);
        }
        Ok(cal)
    }

    /// Adds a year, replacing what was known for it (a tenant's override).
    pub fn set_year(&mut self, year: HolidayYear) {
        self.years.insert(year.year, year);
    }

    /// Whether the calendar has data for `year`.
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains_key(&year)
    }

    /// The statutory status of `date`.
    pub fn statutory(&self, date: NaiveDate) -> Statutory {
        // A holiday that started the year before (and ran past 31 December) counts too.
        let in_holiday = |y: i32| {
            self.years
                .get(&y)
                .is_some_and(|d| d.holidays.contains(&date))
        };
        if in_holiday(date.year()) || in_holiday(date.year() - 1) {
            return Statutory::Holiday;
        }
        match self.years.get(&date.year()) {
            Some(y) if y.adjusted_workdays.contains(&date) => Statutory::AdjustedWorkday,
            Some(_) => Statutory::Ordinary,
            None => Statutory::Unknown,
        }
    }
}

/// The weekly rest days of a tenant or an employee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestDays(u8);

impl RestDays {
    /// Saturday and Sunday.
    pub const WEEKEND: RestDays = RestDays(1 << 5 | 1 << 6);

    /// Parses `sun`, `sat,sun`, or an empty string (no weekly rest day).
    pub fn parse(text: &str) -> Result<RestDays, CalendarError> {
        let mut bits = 0u8;
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let day: Weekday = part
                .parse()
                .map_err(|_| CalendarError::Weekday(part.to_owned()))?;
            bits |= 1 << day.num_days_from_monday();
        }
        Ok(RestDays(bits))
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }
}

/// Why a date is or is not a workday for one employee.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayStatus {
    Workday,
    /// A weekly rest day.
    RestDay,
    Holiday,
    /// Approved leave.
    Leave,
}

/// An approved leave, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leave {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

/// Whether `date` is a workday for an employee with these rest days and leaves.
/// Holidays come first, then leave, then adjusted workdays, then the week.
pub fn day_status(
    cal: &HolidayCalendar,
    rest: RestDays,
    leaves: &[Leave],
    date: NaiveDate,
) -> DayStatus {
    let statutory = cal.statutory(date);
    if statutory == Statutory::Holiday {
        return DayStatus::Holiday;
    }
    if leaves.iter().any(|l| l.from <= date && date <= l.to) {
        return DayStatus::Leave;
    }
    if statutory == Statutory::AdjustedWorkday || !rest.contains(date.weekday()) {
        DayStatus::Workday
    } else {
        DayStatus::RestDay
    }
}

/// The watermark: a day may be judged once it has ended in the tenant's zone
/// and the grace period has passed, so a late check-in or a leave entered the
/// next morning still counts.
pub fn day_is_closed(date: NaiveDate, tz: Tz, grace: Duration, now: DateTime<Utc>) -> bool {
    let next = date.succ_opt().expect("dates before 262143");
    // Midnight can fall in a DST gap in some zones: take the earliest instant that exists.
    let end = next
        .and_hms_opt(0, 0, 0)
        .and_then(|midnight| tz.from_local_datetime(&midnight).earliest())
        .map(|t| t.with_timezone(&Utc));
    end.is_some_and(|end| end + grace <= now)
}

/// The most recent workday that is closed at `now`, looking back at most
/// `max_days` days.
pub fn last_closed_workday(
    cal: &HolidayCalendar,
    rest: RestDays,
    leaves: &[Leave],
    tz: Tz,
    grace: Duration,
    now: DateTime<Utc>,
    max_days: u32,
) -> Option<NaiveDate> {
    let today = now.with_timezone(&tz).date_naive();
    (0..=max_days)
        .filter_map(|back| today.checked_sub_signed(Duration::days(i64::from(back))))
        .filter(|d| day_is_closed(*d, tz, grace, now))
        .find(|d| day_status(cal, rest, leaves, *d) == DayStatus::Workday)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn shipped() -> HolidayCalendar {
        HolidayCalendar::shipped().unwrap()
    }

    #[rstest]
    #[case::new_year("2026-01-01", Statutory::Holiday)]
    #[case::new_year_end("2026-01-03", Statutory::Holiday)]
    #[case::new_year_makeup_sunday("2026-01-04", Statutory::AdjustedWorkday)]
    #[case::spring_festival_first("2026-02-15", Statutory::Holiday)]
    #[case::spring_festival_last("2026-02-23", Statutory::Holiday)]
    #[case::spring_festival_makeup("2026-02-14", Statutory::AdjustedWorkday)]
    #[case::after_spring_festival("2026-02-24", Statutory::Ordinary)]
    #[case::national_day("2026-10-07", Statutory::Holiday)]
    #[case::national_day_makeup("2026-10-10", Statutory::AdjustedWorkday)]
    #[case::ordinary_tuesday("2026-11-24", Statutory::Ordinary)]
    #[case::year_not_published("2027-01-01", Statutory::Unknown)]
    fn statutory_2026(#[case] date: &str, #[case] expected: Statutory) {
        assert_eq!(shipped().statutory(d(date)), expected);
    }

    #[rstest]
    // 2026-11-24 Tue, 2026-11-28 Sat, 2026-11-29 Sun
    #[case::weekday("2026-11-24", "sat,sun", DayStatus::Workday)]
    #[case::saturday_off("2026-11-28", "sat,sun", DayStatus::RestDay)]
    #[case::saturday_on_site("2026-11-28", "sun", DayStatus::Workday)]
    #[case::sunday_on_site("2026-11-29", "sun", DayStatus::RestDay)]
    #[case::no_rest_day("2026-11-29", "", DayStatus::Workday)]
    #[case::holiday_beats_no_rest("2026-10-01", "", DayStatus::Holiday)]
    #[case::makeup_sunday_is_work("2026-01-04", "sat,sun", DayStatus::Workday)]
    #[case::makeup_saturday_is_work("2026-02-28", "sat,sun", DayStatus::Workday)]
    #[case::on_leave("2026-11-25", "sat,sun", DayStatus::Leave)]
    #[case::holiday_during_leave("2026-10-02", "sat,sun", DayStatus::Holiday)]
    fn day_status_table(#[case] date: &str, #[case] rest: &str, #[case] expected: DayStatus) {
        let leaves = [
            Leave {
                from: d("2026-11-25"),
                to: d("2026-11-26"),
            },
            Leave {
                from: d("2026-09-30"),
                to: d("2026-10-08"),
            },
        ];
        assert_eq!(
            day_status(&shipped(), RestDays::parse(rest).unwrap(), &leaves, d(date)),
            expected
        );
    }

    #[rstest]
    // Shanghai is UTC+8: 2026-11-24 ends at 2026-11-24T16:00Z.
    #[case::before_midnight("2026-11-24T15:59:59Z", 0, false)]
    #[case::at_midnight("2026-11-24T16:00:00Z", 0, true)]
    #[case::inside_grace("2026-11-25T01:00:00Z", 10, false)]
    #[case::after_grace("2026-11-25T02:00:00Z", 10, true)]
    fn watermark(#[case] now: &str, #[case] grace_hours: i64, #[case] closed: bool) {
        let now: DateTime<Utc> = now.parse().unwrap();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        assert_eq!(
            day_is_closed(d("2026-11-24"), tz, Duration::hours(grace_hours), now),
            closed
        );
    }

    #[rstest]
    // Monday 2026-11-30, 10:00 in Shanghai: the last closed workday is Friday.
    #[case::monday_morning("2026-11-30T02:00:00Z", "sat,sun", Some("2026-11-27"))]
    #[case::six_day_week("2026-11-30T02:00:00Z", "sun", Some("2026-11-28"))]
    // 2026-10-08 10:00: the National Day holiday ran 1–7 October; 30 September was a workday.
    #[case::after_national_day("2026-10-08T02:00:00Z", "sat,sun", Some("2026-09-30"))]
    fn last_closed(#[case] now: &str, #[case] rest: &str, #[case] expected: Option<&str>) {
        let now: DateTime<Utc> = now.parse().unwrap();
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        let got = last_closed_workday(
            &shipped(),
            RestDays::parse(rest).unwrap(),
            &[],
            tz,
            Duration::hours(2),
            now,
            31,
        );
        assert_eq!(got, expected.map(d));
    }

    #[test]
    fn coverage_and_overrides() {
        let mut cal = shipped();
        assert!(cal.covers(2026));
        assert!(
            !cal.covers(2027),
            "the 2027 notice is not published: do not invent it"
        );
        let custom = HolidayYear::parse(
            "tenant override",
            "year = 2027\n[[holidays]]\nfrom = \"2027-01-01\"\nto = \"2027-01-01\"\n",
        )
        .unwrap();
        cal.set_year(custom);
        assert_eq!(cal.statutory(d("2027-01-01")), Statutory::Holiday);
        assert_eq!(cal.statutory(d("2027-01-02")), Statutory::Ordinary);
    }

    #[rstest]
    #[case::backwards(
        "year = 2026\n[[holidays]]\nfrom = \"2026-05-05\"\nto = \"2026-05-01\"\n",
        "ends before"
    )]
    #[case::other_year("year = 2026\nadjusted_workdays = [\"2025-12-28\"]\n", "not in 2026")]
    #[case::both(
        "year = 2026\nadjusted_workdays = [\"2026-05-01\"]\n[[holidays]]\nfrom = \"2026-05-01\"\nto = \"2026-05-01\"\n",
        "both"
    )]
    #[case::typo("year = 2026\nholiday = []\n", "unknown field")]
    fn bad_data_is_refused(#[case] text: &str, #[case] reason: &str) {
        let err = HolidayYear::parse("x.toml", text).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
    }

    #[test]
    fn rest_days_parse() {
        assert_eq!(RestDays::parse("sat, sun").unwrap(), RestDays::WEEKEND);
        assert!(RestDays::parse("sun").unwrap().contains(Weekday::Sun));
        assert!(!RestDays::parse("sun").unwrap().contains(Weekday::Sat));
        assert_eq!(
            RestDays::parse("funday"),
            Err(CalendarError::Weekday("funday".into()))
        );
    }
}
