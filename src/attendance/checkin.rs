//! Check-ins: which site a location is at, which day a message counts for,
//! and storing the check-in once per inbound event.

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use entity::check_in;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, TryInsertResult};

use crate::attendance::shift::Direction;
use crate::config::Site;

/// Where a location is, relative to the tenant's sites.
#[derive(Debug, Clone, PartialEq)]
pub struct Fence {
    /// The nearest site, if any site is configured.
    pub nearest: Option<String>,
    /// Distance to the nearest site, in metres.
    pub distance_m: Option<f64>,
    /// Within the radius of the nearest site.
    pub inside: bool,
}

/// Great-circle distance in metres (haversine; WGS-84 mean radius).
pub fn distance_m(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    const R: f64 = 6_371_008.8;
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * R * a.sqrt().asin()
}

/// Matches a location against the sites: inside the nearest site that holds
/// it, or flagged with the distance to the nearest. With no sites configured
/// every location is accepted as it is (nothing to compare with).
pub fn geofence(sites: &[Site], latitude: f64, longitude: f64) -> Fence {
    let nearest = sites
        .iter()
        .map(|s| (s, distance_m(latitude, longitude, s.latitude, s.longitude)))
        .min_by(|a, b| (a.1 - a.0.radius_m).total_cmp(&(b.1 - b.0.radius_m)));
    match nearest {
        Some((site, d)) => Fence {
            nearest: Some(site.name.clone()),
            distance_m: Some(d.round()),
            inside: d <= site.radius_m,
        },
        None => Fence {
            nearest: None,
            distance_m: None,
            inside: true,
        },
    }
}

/// The day a message sent at `at` counts for, in the tenant's zone.
pub fn work_date(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// What to store for one check-in.
#[derive(Debug, Clone)]
pub struct NewCheckIn {
    pub tenant_id: String,
    pub user_id: String,
    pub work_date: NaiveDate,
    pub checked_at: DateTime<Utc>,
    pub source: &'static str,
    pub inbound_event_id: i64,
    pub site: Option<String>,
    pub flagged: bool,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub label: Option<String>,
    pub distance_m: Option<f64>,
    pub media_sha256: Option<String>,
    pub direction: Direction,
    /// The shift judged against, and the minutes late or early.
    pub shift: Option<String>,
    pub minutes_off: Option<i32>,
}

/// Stores a check-in; `false` if this inbound event already made one.
pub async fn store<C: ConnectionTrait>(
    conn: &C,
    c: NewCheckIn,
    recorded_at: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = check_in::ActiveModel {
        tenant_id: Set(c.tenant_id),
        user_id: Set(c.user_id),
        work_date: Set(c.work_date),
        checked_at: Set(c.checked_at),
        recorded_at: Set(recorded_at),
        source: Set(c.source.to_owned()),
        inbound_event_id: Set(c.inbound_event_id),
        site: Set(c.site),
        flagged: Set(c.flagged),
        latitude: Set(c.latitude),
        longitude: Set(c.longitude),
        label: Set(c.label),
        distance_m: Set(c.distance_m),
        media_sha256: Set(c.media_sha256),
        direction: Set(c.direction.as_str().to_owned()),
        shift: Set(c.shift),
        minutes_off: Set(c.minutes_off),
        ..Default::default()
    };
    // A conflict is `Inserted(0)` here: sea-orm maps only a missing
    // RETURNING row to `Conflicted`.
    Ok(matches!(
        check_in::Entity::insert(row)
            .on_conflict_do_nothing_on([check_in::Column::InboundEventId])
            .exec_without_returning(conn)
            .await?,
        TryInsertResult::Inserted(n) if n > 0
    ))
}

/// Whether `text` is a check-in: it contains one of the keywords.
pub fn is_checkin_text(keywords: &[String], text: &str) -> bool {
    let t = text.trim();
    keywords.iter().any(|k| t.contains(k.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn site(name: &str, lat: f64, lon: f64, r: f64) -> Site {
        Site {
            name: name.into(),
            latitude: lat,
            longitude: lon,
            radius_m: r,
            shift: None,
        }
    }

    #[test]
    fn distances_match_known_values() {
        // Shanghai People's Square to the Oriental Pearl Tower: about 2.7 km.
        let d = distance_m(31.2304, 121.4737, 31.2397, 121.4998);
        assert!((2_600.0..2_700.0).contains(&d), "{d}");
        assert_eq!(distance_m(31.0, 121.0, 31.0, 121.0), 0.0);
        // One degree of latitude is about 111.2 km.
        let deg = distance_m(30.0, 121.0, 31.0, 121.0);
        assert!((111_100.0..111_300.0).contains(&deg), "{deg}");
    }

    #[rstest]
    #[case::at_the_gate(31.2304, 121.4737, Some("一号工地"), true)]
    #[case::just_inside(31.2312, 121.4737, Some("一号工地"), true)] // ~89 m
    #[case::outside_both(31.2500, 121.4737, Some("一号工地"), false)]
    #[case::at_the_second(31.3000, 121.5000, Some("二号工地"), true)]
    fn locations_match_sites(
        #[case] lat: f64,
        #[case] lon: f64,
        #[case] nearest: Option<&str>,
        #[case] inside: bool,
    ) {
        let sites = [
            site("一号工地", 31.2304, 121.4737, 100.0),
            site("二号工地", 31.3000, 121.5000, 300.0),
        ];
        let f = geofence(&sites, lat, lon);
        assert_eq!(f.nearest.as_deref(), nearest);
        assert_eq!(f.inside, inside, "{f:?}");
    }

    #[test]
    fn without_sites_a_location_is_not_flagged() {
        assert!(geofence(&[], 31.0, 121.0).inside);
    }

    #[rstest]
    #[case("打卡", true)]
    #[case(" 今天到岗了 ", true)]
    #[case("上班打卡", true)]
    #[case("我明天请假", false)]
    #[case("", false)]
    fn keywords(#[case] text: &str, #[case] expected: bool) {
        let kw: Vec<String> = crate::config::DEFAULT_KEYWORDS
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        assert_eq!(is_checkin_text(&kw, text), expected);
    }

    #[test]
    fn a_message_counts_for_its_local_day() {
        let tz: Tz = "Asia/Shanghai".parse().unwrap();
        // 16:30 UTC on 1 Dec is 00:30 on 2 Dec in Shanghai.
        let at: DateTime<Utc> = "2026-12-01T16:30:00Z".parse().unwrap();
        assert_eq!(work_date(at, tz).to_string(), "2026-12-02");
    }
}
