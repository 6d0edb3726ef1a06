//! Attendance: work calendars (which days count) and, in later steps,
//! check-ins and absence detection. Pure functions plus their own queries.

pub mod calendar;
