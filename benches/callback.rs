//! verify + decrypt + parse of a ~1 KB WeCom callback.

use criterion::{Criterion, criterion_group, criterion_main};
use rollcall::loadgen::text_callback;
use rollcall::platform::wecom::{WecomCrypto, parse_envelope, parse_message};

fn callback(c: &mut Criterion) {
    let crypto = WecomCrypto::new(
        "token",
        "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
        "wwcorp",
    )
    .unwrap();
    let content = format!("打卡 {}", "工地签到 ".repeat(40));
    let cb = text_callback(
        &crypto,
        "wwcorp",
        1_000_002,
        7_440_677_009_879_248_857,
        "zhangsan",
        &content,
        1_764_193_070,
    );
    let query: Vec<(String, String)> = form_urlencoded::parse(cb.query.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| query.iter().find(|(n, _)| n == k).unwrap().1.clone();
    let (sig, ts, nonce) = (get("msg_signature"), get("timestamp"), get("nonce"));
    println!("callback body: {} bytes", cb.body.len());
    c.bench_function("wecom verify+decrypt+parse 1KB", |b| {
        b.iter(|| {
            let encrypt = parse_envelope(&cb.body).unwrap();
            let plain = crypto.open(&sig, &ts, &nonce, &encrypt).unwrap();
            parse_message(&plain).unwrap()
        })
    });
}

criterion_group!(benches, callback);
criterion_main!(benches);
