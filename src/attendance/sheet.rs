//! The monthly attendance sheet (考勤表): one row per employee, one column
//! per day, and totals, built from the check-ins, leaves and calendars
//! ([`build`]), written as a real `.xlsx` ([`write_xlsx`]). What a day
//! shows is one pure function ([`mark`]).

use std::collections::HashMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use entity::{check_in, employee, leave};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QuerySelect,
};

use crate::attendance::calendar::{DayStatus, Leave, RestDays, day_is_closed, day_status};
use crate::runtime::Tenant;

/// A month, as `2026-12`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Month {
    pub year: i32,
    pub month: u32,
}

impl Month {
    /// Parses `2026-12` (or `2026/12`, `2026.12`).
    pub fn parse(text: &str) -> Option<Month> {
        let normal = text.trim().replace(['/', '.'], "-");
        let (y, m) = normal.split_once('-')?;
        if y.len() != 4 || m.is_empty() || m.len() > 2 {
            return None;
        }
        let month = Month {
            year: y.parse().ok()?,
            month: m.parse().ok()?,
        };
        month.first().map(|_| month)
    }

    pub fn first(self) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
    }

    /// Every date of the month.
    pub fn days(self) -> Vec<NaiveDate> {
        let Some(first) = self.first() else {
            return Vec::new();
        };
        first
            .iter_days()
            .take_while(|d| d.month() == self.month)
            .collect()
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One person's check-ins of one day, summed up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DayPunches {
    pub ins: u32,
    pub outs: u32,
    /// Minutes late of the day's earliest check-in (0 when on time).
    pub late: i32,
    /// Minutes early of the day's latest check-out (0 when on time).
    pub early: i32,
    /// Judged against a shift (so a missing check-out means something).
    pub shifted: bool,
}

/// What one day of one person shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Came (a check-in or a check-out), with what went wrong.
    Present {
        late: i32,
        early: i32,
        /// On a shift, checked in and never out (recorded, not guessed).
        no_check_out: bool,
    },
    /// A closed workday without a check-in, leave or holiday.
    Absent,
    Leave,
    Rest,
    Holiday,
    /// Not employed that day (before hire, after the contract's end).
    NotEmployed,
    /// A workday not judged yet (today, the future, or still in the grace).
    Open,
}

/// What `day` shows for a person: employment first, then any punch (a punch
/// on a rest day or holiday is work), then the calendar (holidays before
/// leave, see [`day_status`]), and a workday without either is absent once
/// closed.
pub fn mark(employed: bool, punches: Option<DayPunches>, status: DayStatus, closed: bool) -> Mark {
    if !employed {
        return Mark::NotEmployed;
    }
    if let Some(p) = punches.filter(|p| p.ins + p.outs > 0) {
        return Mark::Present {
            late: if p.ins > 0 { p.late.max(0) } else { 0 },
            early: if p.outs > 0 { p.early.max(0) } else { 0 },
            no_check_out: p.shifted && p.ins > 0 && p.outs == 0 && closed,
        };
    }
    match status {
        DayStatus::Holiday => Mark::Holiday,
        DayStatus::RestDay => Mark::Rest,
        DayStatus::Leave => Mark::Leave,
        DayStatus::Workday if closed => Mark::Absent,
        DayStatus::Workday => Mark::Open,
    }
}

impl Mark {
    /// The cell's text (see [`LEGEND`]).
    pub fn code(self) -> String {
        match self {
            Mark::Present {
                late,
                early,
                no_check_out,
            } => {
                let mut s = String::new();
                if late > 0 {
                    s.push('迟');
                }
                if early > 0 {
                    s.push('早');
                }
                if s.is_empty() {
                    s.push('√');
                }
                if no_check_out {
                    s.push('未');
                }
                s
            }
            Mark::Absent => "缺".into(),
            Mark::Leave => "假".into(),
            Mark::Rest => "休".into(),
            Mark::Holiday => "节".into(),
            Mark::NotEmployed => "—".into(),
            Mark::Open => String::new(),
        }
    }
}

/// What the codes mean, printed under the table.
pub const LEGEND: &[(&str, &str)] = &[
    ("√", "出勤"),
    ("迟", "迟到（首次上班打卡晚于班次开始加宽限）"),
    ("早", "早退（最后一次下班打卡早于班次结束）"),
    ("未", "有班次、已上班打卡但没有下班打卡（如实记录，不推定）"),
    ("缺", "工作日无打卡、无请假"),
    ("假", "请假"),
    ("休", "休息日"),
    ("节", "法定节假日"),
    ("—", "不在职（入职前或合同结束后）"),
    ("空白", "尚未结束的日子"),
];

/// A person's month, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Workdays of the person's calendar while employed, leave or not
    /// (应出勤), closed or not.
    pub workdays: u32,
    pub present: u32,
    pub late: u32,
    pub late_minutes: i64,
    pub early: u32,
    pub early_minutes: i64,
    pub no_check_out: u32,
    pub absent: u32,
    pub leave: u32,
    pub rest: u32,
    pub holiday: u32,
}

/// The totals' column titles, in [`Totals::values`]' order.
pub const TOTAL_TITLES: [&str; 11] = [
    "应出勤",
    "出勤",
    "迟到次数",
    "迟到分钟",
    "早退次数",
    "早退分钟",
    "未签退",
    "缺勤",
    "请假",
    "休息",
    "节假日",
];

impl Totals {
    /// Counts `m`, a day that is a workday of the person's calendar if
    /// `scheduled` (whatever their leave).
    fn add(&mut self, m: Mark, scheduled: bool) {
        if m != Mark::NotEmployed && scheduled {
            self.workdays += 1;
        }
        match m {
            Mark::Present {
                late,
                early,
                no_check_out,
            } => {
                self.present += 1;
                if late > 0 {
                    self.late += 1;
                    self.late_minutes += i64::from(late);
                }
                if early > 0 {
                    self.early += 1;
                    self.early_minutes += i64::from(early);
                }
                if no_check_out {
                    self.no_check_out += 1;
                }
            }
            Mark::Absent => self.absent += 1,
            Mark::Leave => self.leave += 1,
            Mark::Rest => self.rest += 1,
            Mark::Holiday => self.holiday += 1,
            Mark::NotEmployed | Mark::Open => {}
        }
    }

    pub fn values(&self) -> [i64; 11] {
        [
            i64::from(self.workdays),
            i64::from(self.present),
            i64::from(self.late),
            self.late_minutes,
            i64::from(self.early),
            self.early_minutes,
            i64::from(self.no_check_out),
            i64::from(self.absent),
            i64::from(self.leave),
            i64::from(self.rest),
            i64::from(self.holiday),
        ]
    }
}

/// One row of the sheet.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub user_id: String,
    pub name: String,
    pub department: String,
    pub marks: Vec<Mark>,
    pub totals: Totals,
}

/// A tenant's month.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthSheet {
    pub tenant: String,
    pub tenant_name: String,
    pub month: Month,
    pub days: Vec<NaiveDate>,
    /// When it was made, in the tenant's zone (`2026-12-31 18:00`).
    pub made_at: String,
    pub rows: Vec<Row>,
}

/// Builds `tenant`'s sheet of `month` at `now`: everyone active, and
/// anyone who left but checked in that month; ordered by department, then
/// user id.
pub async fn build(
    conn: &DatabaseConnection,
    tenant: &Tenant,
    month: Month,
    now: DateTime<Utc>,
) -> Result<MonthSheet, DbErr> {
    let config = &tenant.config;
    let days = month.days();
    let (Some(first), Some(last)) = (days.first().copied(), days.last().copied()) else {
        return Err(DbErr::Custom(format!("no such month: {month}")));
    };
    let punches = month_punches(conn, &config.id, first, days.len()).await?;
    type Person = (
        String,
        String,
        String,
        bool,
        Option<String>,
        Option<NaiveDate>,
        Option<NaiveDate>,
    );
    let mut people: Vec<Person> = employee::Entity::find()
        .select_only()
        .column(employee::Column::UserId)
        .column(employee::Column::Name)
        .column(employee::Column::Department)
        .column(employee::Column::Active)
        .column(employee::Column::RestDays)
        .column(employee::Column::HireDate)
        .column(employee::Column::ContractEndDate)
        .filter(employee::Column::TenantId.eq(&config.id))
        .into_tuple()
        .all(conn)
        .await?;
    let mut leaves: HashMap<String, Vec<Leave>> = HashMap::new();
    for l in leave::Entity::find()
        .filter(leave::Column::TenantId.eq(&config.id))
        .filter(leave::Column::FromDate.lte(last))
        .filter(leave::Column::ToDate.gte(first))
        .all(conn)
        .await?
    {
        leaves.entry(l.user_id).or_default().push(Leave {
            from: l.from_date,
            to: l.to_date,
        });
    }
    people.retain(|p| p.3 || punches.contains_key(&p.0));
    people.sort_by(|a, b| (&a.2, &a.0).cmp(&(&b.2, &b.0)));
    let a = &config.attendance;
    let closed: Vec<bool> = days
        .iter()
        .map(|d| day_is_closed(*d, config.timezone, a.grace, now))
        .collect();
    let no_leave = Vec::new();
    let rows = people
        .into_iter()
        .map(|(user_id, name, department, _, rest, hired, ends)| {
            let rest = rest
                .as_deref()
                .and_then(|r| RestDays::parse(r).ok())
                .unwrap_or(a.rest_days);
            let own_leaves = leaves.get(&user_id).unwrap_or(&no_leave);
            let own_punches = punches.get(&user_id);
            let mut totals = Totals::default();
            let marks = days
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let employed = hired.is_none_or(|h| h <= *d) && ends.is_none_or(|e| *d <= e);
                    let status = day_status(&a.calendar, rest, own_leaves, *d);
                    let m = mark(employed, own_punches.and_then(|p| p[i]), status, closed[i]);
                    let scheduled = status == DayStatus::Workday
                        || day_status(&a.calendar, rest, &[], *d) == DayStatus::Workday;
                    totals.add(m, scheduled);
                    m
                })
                .collect();
            Row {
                user_id,
                name,
                department,
                marks,
                totals,
            }
        })
        .collect();
    Ok(MonthSheet {
        tenant: config.id.clone(),
        tenant_name: config.name.clone(),
        month,
        days,
        made_at: now
            .with_timezone(&config.timezone)
            .format("%Y-%m-%d %H:%M")
            .to_string(),
        rows,
    })
}

/// A sheet made and handed out, as evidence: who asked (`None` from the
/// command line), for which month, and the file's SHA-256.
pub async fn record<C: ConnectionTrait>(
    conn: &C,
    sheet: &MonthSheet,
    sha256: &str,
    actor: Option<&str>,
    via: &str,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    crate::evidence::append_one(
        conn,
        &sheet.tenant,
        now,
        crate::evidence::NewLeaf::new("attendance_sheet")
            .actor(actor)
            .detail(serde_json::json!({
                "month": sheet.month.to_string(),
                "employees": sheet.rows.len(),
                "sha256": sha256,
                "via": via,
            })),
    )
    .await?;
    Ok(())
}

/// Each person's punches of the `len` days from `first`, summed up per
/// day: how many check-ins and check-outs, the least late check-in and the
/// least early check-out. One line per person and day; on SQLite read from
/// the file directly (rusqlite: a month of a large tenant is millions of
/// rows, which sqlx hands over one at a time), else through sea-orm.
async fn month_punches(
    conn: &DatabaseConnection,
    tenant: &str,
    first: NaiveDate,
    len: usize,
) -> Result<HashMap<String, Vec<Option<DayPunches>>>, DbErr> {
    const SQL: &str = "SELECT user_id, work_date, \
         COUNT(CASE WHEN direction = 'in' THEN 1 END), \
         COUNT(CASE WHEN direction = 'out' THEN 1 END), \
         MIN(CASE WHEN direction = 'in' THEN COALESCE(minutes_off, 0) END), \
         MIN(CASE WHEN direction = 'out' THEN COALESCE(minutes_off, 0) END), \
         COUNT(shift) \
         FROM check_ins WHERE tenant_id = ?1 AND work_date >= ?2 AND work_date <= ?3 \
         GROUP BY work_date, user_id";
    type Punches = HashMap<String, Vec<Option<DayPunches>>>;
    let last = first + chrono::Duration::days(len as i64 - 1);
    let put = move |punches: &mut Punches, user: &str, day: NaiveDate, p: DayPunches| {
        let Some(i) = usize::try_from((day - first).num_days())
            .ok()
            .filter(|i| *i < len)
        else {
            return;
        };
        match punches.get_mut(user) {
            Some(v) => v[i] = Some(p),
            None => {
                let mut v = vec![None; len];
                v[i] = Some(p);
                punches.insert(user.to_owned(), v);
            }
        }
    };
    let punch = move |ins: i64, outs: i64, late: Option<i64>, early: Option<i64>, shifted: i64| {
        DayPunches {
            ins: u32::try_from(ins).unwrap_or(u32::MAX),
            outs: u32::try_from(outs).unwrap_or(u32::MAX),
            late: late.map_or(0, |m| i32::try_from(m).unwrap_or(i32::MAX)),
            early: early.map_or(0, |m| i32::try_from(m).unwrap_or(i32::MAX)),
            shifted: shifted > 0,
        }
    };
    let file = (conn.get_database_backend() == DbBackend::Sqlite)
        .then(|| {
            conn.get_sqlite_connection_pool()
                .connect_options()
                .get_filename()
                .to_owned()
        })
        .filter(|f| f.is_file());
    if let Some(file) = file {
        // The month in parts, each read on its own connection and core.
        let parts = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let per = len.div_ceil(parts);
        let mut reads = Vec::new();
        for part in 0..parts {
            let from = first + chrono::Duration::days((part * per) as i64);
            let to = (from + chrono::Duration::days(per as i64 - 1)).min(last);
            if from > last {
                break;
            }
            let (file, tenant) = (file.clone(), tenant.to_owned());
            reads.push(tokio::task::spawn_blocking(
                move || -> rusqlite::Result<Punches> {
                    let db = rusqlite::Connection::open_with_flags(
                        file,
                        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    db.busy_timeout(std::time::Duration::from_secs(5))?;
                    let mut statement = db.prepare(SQL)?;
                    let mut rows = statement.query(rusqlite::params![
                        tenant,
                        from.to_string(),
                        to.to_string()
                    ])?;
                    let mut punches = Punches::new();
                    while let Some(r) = rows.next()? {
                        let Ok(day) = r.get_ref(1)?.as_str()?.parse::<NaiveDate>() else {
                            continue;
                        };
                        let p = punch(r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?);
                        put(&mut punches, r.get_ref(0)?.as_str()?, day, p);
                    }
                    Ok(punches)
                },
            ));
        }
        let mut punches = Punches::new();
        for read in reads {
            let part = read
                .await
                .map_err(|e| DbErr::Custom(e.to_string()))?
                .map_err(|e| DbErr::Custom(format!("reading the check-ins: {e}")))?;
            if punches.is_empty() {
                punches = part;
                continue;
            }
            for (user, days) in part {
                match punches.get_mut(&user) {
                    None => {
                        punches.insert(user, days);
                    }
                    Some(mine) => {
                        for (i, d) in days.into_iter().enumerate() {
                            if d.is_some() {
                                mine[i] = d;
                            }
                        }
                    }
                }
            }
        }
        return Ok(punches);
    }
    type Punched = (String, NaiveDate, i64, i64, Option<i64>, Option<i64>, i64);
    let rows: Vec<Punched> = check_in::Entity::find()
        .select_only()
        .column(check_in::Column::UserId)
        .column(check_in::Column::WorkDate)
        .expr(Expr::cust("COUNT(CASE WHEN direction = 'in' THEN 1 END)"))
        .expr(Expr::cust("COUNT(CASE WHEN direction = 'out' THEN 1 END)"))
        .expr(Expr::cust(
            "MIN(CASE WHEN direction = 'in' THEN CAST(COALESCE(minutes_off, 0) AS BIGINT) END)",
        ))
        .expr(Expr::cust(
            "MIN(CASE WHEN direction = 'out' THEN CAST(COALESCE(minutes_off, 0) AS BIGINT) END)",
        ))
        .expr(Expr::cust("COUNT(shift)"))
        .filter(check_in::Column::TenantId.eq(tenant))
        .filter(check_in::Column::WorkDate.gte(first))
        .filter(check_in::Column::WorkDate.lte(last))
        .group_by(check_in::Column::WorkDate)
        .group_by(check_in::Column::UserId)
        .into_tuple()
        .all(conn)
        .await?;
    let mut punches = Punches::new();
    for (user, day, ins, outs, late, early, shifted) in rows {
        put(
            &mut punches,
            &user,
            day,
            punch(ins, outs, late, early, shifted),
        );
    }
    Ok(punches)
}

const WEEKDAYS: [&str; 7] = ["一", "二", "三", "四", "五", "六", "日"];

/// The sheet as `.xlsx` bytes: a title, a header of days (with weekday), a
/// row per person with the day codes and totals, and the legend.
pub fn to_xlsx(sheet: &MonthSheet) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::{Format, FormatAlign, Workbook};
    let mut book = Workbook::new();
    // Rows go to a temporary file as they are written; the day codes are
    // a handful of shared strings.
    let ws = book.add_worksheet_with_low_memory()?;
    ws.set_name(format!("考勤表 {}", sheet.month))?;
    let bold = Format::new().set_bold();
    let center = Format::new().set_align(FormatAlign::Center);
    let head = Format::new()
        .set_bold()
        .set_align(FormatAlign::Center)
        .set_text_wrap();
    ws.write_string_with_format(
        0,
        0,
        format!(
            "{} 考勤表 {}（生成于 {}，rollcall）",
            sheet.tenant_name, sheet.month, sheet.made_at
        ),
        &bold,
    )?;
    let day0: u16 = 3;
    let days = u16::try_from(sheet.days.len()).unwrap_or(31);
    let totals0 = day0 + days;
    for (c, title) in ["工号", "姓名", "部门"].iter().enumerate() {
        ws.write_string_with_format(1, c as u16, *title, &head)?;
    }
    for (i, d) in sheet.days.iter().enumerate() {
        let weekday = WEEKDAYS[d.weekday().num_days_from_monday() as usize];
        ws.write_string_with_format(1, day0 + i as u16, format!("{}\n{weekday}", d.day()), &head)?;
        ws.set_column_width(day0 + i as u16, 4.5)?;
        ws.set_column_format(day0 + i as u16, &center)?;
    }
    for (j, title) in TOTAL_TITLES.iter().enumerate() {
        ws.write_string_with_format(1, totals0 + j as u16, *title, &head)?;
    }
    ws.set_column_width(0, 14)?;
    ws.set_column_width(2, 12)?;
    ws.set_freeze_panes(2, day0)?;
    let mut r: u32 = 2;
    for row in &sheet.rows {
        ws.write_string(r, 0, &row.user_id)?;
        ws.write_string(r, 1, &row.name)?;
        ws.write_string(r, 2, &row.department)?;
        for (i, m) in row.marks.iter().enumerate() {
            let code = m.code();
            if !code.is_empty() {
                ws.write_string(r, day0 + i as u16, code)?;
            }
        }
        for (j, v) in row.totals.values().iter().enumerate() {
            ws.write_number(r, totals0 + j as u16, *v as f64)?;
        }
        r += 1;
    }
    r += 1;
    ws.write_string_with_format(r, 0, "图例", &bold)?;
    for (code, meaning) in LEGEND {
        r += 1;
        ws.write_string(r, 0, *code)?;
        ws.write_string(r, 1, *meaning)?;
    }
    book.save_to_buffer()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn p(ins: u32, outs: u32, late: i32, early: i32, shifted: bool) -> Option<DayPunches> {
        Some(DayPunches {
            ins,
            outs,
            late,
            early,
            shifted,
        })
    }

    const W: DayStatus = DayStatus::Workday;

    #[rstest]
    #[case::present(true, p(1, 0, 0, 0, false), W, true, "√")]
    #[case::late(true, p(1, 1, 12, 0, true), W, true, "迟")]
    #[case::early(true, p(1, 1, 0, 30, true), W, true, "早")]
    #[case::late_and_early(true, p(2, 1, 5, 3, true), W, true, "迟早")]
    #[case::no_check_out(true, p(1, 0, 0, 0, true), W, true, "√未")]
    #[case::late_no_check_out(true, p(1, 0, 9, 0, true), W, true, "迟未")]
    #[case::no_check_out_not_yet_closed(true, p(1, 0, 0, 0, true), W, false, "√")]
    #[case::only_a_check_out(true, p(0, 1, 0, 0, true), W, true, "√")]
    #[case::absent(true, None, W, true, "缺")]
    #[case::today(true, None, W, false, "")]
    #[case::leave(true, None, DayStatus::Leave, true, "假")]
    #[case::rest(true, None, DayStatus::RestDay, true, "休")]
    #[case::holiday(true, None, DayStatus::Holiday, true, "节")]
    #[case::worked_a_holiday(true, p(1, 0, 0, 0, false), DayStatus::Holiday, true, "√")]
    #[case::not_yet_hired(false, None, W, true, "—")]
    #[case::not_employed_wins(false, p(1, 0, 0, 0, false), W, true, "—")]
    fn days_are_marked(
        #[case] employed: bool,
        #[case] punches: Option<DayPunches>,
        #[case] status: DayStatus,
        #[case] closed: bool,
        #[case] code: &str,
    ) {
        assert_eq!(mark(employed, punches, status, closed).code(), code);
    }

    #[rstest]
    #[case("2026-12", Some((2026, 12)))]
    #[case("2026/2", Some((2026, 2)))]
    #[case("2026.02", Some((2026, 2)))]
    #[case("2026-13", None)]
    #[case("26-12", None)]
    #[case("2026", None)]
    #[case("2026-1-1", None)]
    fn months_parse(#[case] text: &str, #[case] expected: Option<(i32, u32)>) {
        assert_eq!(
            Month::parse(text).map(|m| (m.year, m.month)),
            expected,
            "{text}"
        );
    }

    #[test]
    fn a_month_has_its_days() {
        assert_eq!(Month::parse("2026-02").unwrap().days().len(), 28);
        assert_eq!(Month::parse("2028-02").unwrap().days().len(), 29);
        assert_eq!(Month::parse("2026-12").unwrap().days().len(), 31);
    }

    #[test]
    fn totals_count_what_the_marks_say() {
        let mut t = Totals::default();
        for (m, scheduled) in [
            (mark(true, p(1, 1, 10, 0, true), W, true), true),
            (mark(true, p(1, 1, 0, 20, true), W, true), true),
            (mark(true, p(1, 0, 0, 0, true), W, true), true),
            (mark(true, None, W, true), true),
            // Leave on a workday is still a workday to attend.
            (mark(true, None, DayStatus::Leave, true), true),
            (mark(true, None, DayStatus::RestDay, true), false),
            (mark(false, None, W, true), true),
            (mark(true, None, W, false), true),
        ] {
            t.add(m, scheduled);
        }
        assert_eq!(t.values(), [6, 3, 1, 10, 1, 20, 1, 1, 1, 1, 0]);
    }
}
