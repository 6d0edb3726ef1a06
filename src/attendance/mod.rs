//! Attendance: work calendars (which days count) and check-ins. Pure
//! functions plus their own queries.

pub mod calendar;
pub mod checkin;
pub mod punches;
pub mod sheet;
pub mod shift;
