//! Shifts: when a person's day of work starts and ends, which day a punch
//! belongs to (an overnight shift's end falls on the next date), and by how
//! much a check-in was late or a check-out early. Pure functions.

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};

/// A named shift of a tenant (`[[tenants.shifts]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shift {
    pub name: String,
    pub start: NaiveTime,
    /// At or before `start`: the shift ends on the next date (overnight).
    pub end: NaiveTime,
    /// A check-in up to this long after `start` is on time.
    pub grace: Duration,
}

/// Whether a punch starts the day's work or ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// A punch judged against a shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judged {
    /// The date the shift started on: the work day the punch counts for.
    pub day: NaiveDate,
    /// Minutes late (a check-in after the grace, counted from the start) or
    /// early (a check-out before the end); `None` when on time.
    pub minutes_off: Option<i32>,
}

impl Shift {
    pub fn overnight(&self) -> bool {
        self.end <= self.start
    }

    pub fn starts(&self, day: NaiveDate) -> NaiveDateTime {
        day.and_time(self.start)
    }

    pub fn ends(&self, day: NaiveDate) -> NaiveDateTime {
        let end = day.and_time(self.end);
        if self.overnight() {
            end + Duration::days(1)
        } else {
            end
        }
    }

    /// Half way through the shift started on `day`.
    pub fn midpoint(&self, day: NaiveDate) -> NaiveDateTime {
        let start = self.starts(day);
        start + (self.ends(day) - start) / 2
    }

    /// The date of the shift a punch at `local` belongs to. A day shift's
    /// punches count for their own date. On an overnight shift (22:00 to
    /// 06:00, say) a check-in before the end time is a late check-in for
    /// the shift that started the evening before, and a check-out before
    /// the start time ends that shift.
    pub fn day_of(&self, local: NaiveDateTime, direction: Direction) -> NaiveDate {
        let date = local.date();
        if !self.overnight() {
            return date;
        }
        let previous = match direction {
            Direction::In => local.time() < self.end,
            Direction::Out => local.time() < self.start,
        };
        if previous {
            date.pred_opt().unwrap_or(date)
        } else {
            date
        }
    }

    /// Judges a punch at `local` (the tenant's zone) made in `direction`.
    pub fn judge(&self, local: NaiveDateTime, direction: Direction) -> Judged {
        let day = self.day_of(local, direction);
        let minutes_off = match direction {
            Direction::In => {
                let late = local - self.starts(day);
                (late > self.grace).then(|| whole_minutes(late))
            }
            Direction::Out => {
                let early = self.ends(day) - local;
                (early > Duration::zero()).then(|| whole_minutes(early))
            }
        };
        Judged {
            day,
            minutes_off: minutes_off.filter(|m| *m > 0),
        }
    }
}

/// Whole minutes, rounded up (a minute and a second late is two minutes):
/// a person is never told less than the time they were off.
fn whole_minutes(d: Duration) -> i32 {
    let secs = d.num_seconds();
    i32::try_from((secs + 59) / 60).unwrap_or(i32::MAX)
}

/// Which way a punch goes when the message does not say (a location, a
/// photo, the platform's punch): the end of the day's work if the person
/// already checked in for the shift and it is past half way, else the
/// start.
pub fn infer_direction(
    shift: &Shift,
    local: NaiveDateTime,
    checked_in_for: &[NaiveDate],
) -> Direction {
    let day = shift.day_of(local, Direction::Out);
    if checked_in_for.contains(&day) && local >= shift.midpoint(day) {
        Direction::Out
    } else {
        Direction::In
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn shift(start: &str, end: &str, grace: i64) -> Shift {
        Shift {
            name: "s".into(),
            start: NaiveTime::parse_from_str(start, "%H:%M").unwrap(),
            end: NaiveTime::parse_from_str(end, "%H:%M").unwrap(),
            grace: Duration::minutes(grace),
        }
    }

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap()
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[rstest]
    #[case::early_bird(
        "08:00",
        "17:00",
        5,
        "2026-12-01 07:40:00",
        Direction::In,
        "2026-12-01",
        None
    )]
    #[case::in_the_grace(
        "08:00",
        "17:00",
        5,
        "2026-12-01 08:05:00",
        Direction::In,
        "2026-12-01",
        None
    )]
    #[case::a_second_past_the_grace(
        "08:00",
        "17:00",
        5,
        "2026-12-01 08:05:01",
        Direction::In,
        "2026-12-01",
        Some(6)
    )]
    #[case::late(
        "08:00",
        "17:00",
        5,
        "2026-12-01 09:17:00",
        Direction::In,
        "2026-12-01",
        Some(77)
    )]
    #[case::no_grace(
        "08:00",
        "17:00",
        0,
        "2026-12-01 08:00:30",
        Direction::In,
        "2026-12-01",
        Some(1)
    )]
    #[case::left_early(
        "08:00",
        "17:00",
        5,
        "2026-12-01 16:30:00",
        Direction::Out,
        "2026-12-01",
        Some(30)
    )]
    #[case::left_on_time(
        "08:00",
        "17:00",
        5,
        "2026-12-01 17:00:00",
        Direction::Out,
        "2026-12-01",
        None
    )]
    #[case::stayed_late(
        "08:00",
        "17:00",
        5,
        "2026-12-01 19:00:00",
        Direction::Out,
        "2026-12-01",
        None
    )]
    #[case::night_in_on_time(
        "22:00",
        "06:00",
        10,
        "2026-12-01 21:55:00",
        Direction::In,
        "2026-12-01",
        None
    )]
    #[case::night_in_after_midnight(
        "22:00",
        "06:00",
        10,
        "2026-12-02 00:30:00",
        Direction::In,
        "2026-12-01",
        Some(150)
    )]
    #[case::night_out_next_morning(
        "22:00",
        "06:00",
        10,
        "2026-12-02 06:02:00",
        Direction::Out,
        "2026-12-01",
        None
    )]
    #[case::night_out_early_morning(
        "22:00",
        "06:00",
        10,
        "2026-12-02 05:15:00",
        Direction::Out,
        "2026-12-01",
        Some(45)
    )]
    #[case::night_out_before_midnight(
        "22:00",
        "06:00",
        10,
        "2026-12-01 23:00:00",
        Direction::Out,
        "2026-12-01",
        Some(420)
    )]
    #[case::midnight_end(
        "16:00",
        "00:00",
        0,
        "2026-12-01 23:50:00",
        Direction::Out,
        "2026-12-01",
        Some(10)
    )]
    fn punches_are_judged(
        #[case] start: &str,
        #[case] end: &str,
        #[case] grace: i64,
        #[case] local: &str,
        #[case] direction: Direction,
        #[case] expected_day: &str,
        #[case] off: Option<i32>,
    ) {
        let j = shift(start, end, grace).judge(at(local), direction);
        assert_eq!(j.day, day(expected_day));
        assert_eq!(j.minutes_off, off);
    }

    #[rstest]
    #[case::morning_without_check_in("2026-12-01 08:00:00", &[], Direction::In)]
    #[case::afternoon_without_check_in("2026-12-01 16:00:00", &[], Direction::In)]
    #[case::morning_after_check_in("2026-12-01 09:00:00", &["2026-12-01"], Direction::In)]
    #[case::afternoon_after_check_in("2026-12-01 16:00:00", &["2026-12-01"], Direction::Out)]
    #[case::checked_in_yesterday_only("2026-12-01 16:00:00", &["2026-11-30"], Direction::In)]
    fn a_location_goes_the_likely_way(
        #[case] local: &str,
        #[case] checked: &[&str],
        #[case] expected: Direction,
    ) {
        let checked: Vec<NaiveDate> = checked.iter().map(|d| day(d)).collect();
        assert_eq!(
            infer_direction(&shift("08:00", "17:00", 5), at(local), &checked),
            expected
        );
    }

    #[test]
    fn a_night_shift_location_next_morning_ends_the_night() {
        let night = shift("22:00", "06:00", 10);
        let checked = [day("2026-12-01")];
        assert_eq!(
            infer_direction(&night, at("2026-12-02 05:50:00"), &checked),
            Direction::Out
        );
        assert_eq!(
            infer_direction(&night, at("2026-12-01 21:58:00"), &checked[..0]),
            Direction::In
        );
    }
}
