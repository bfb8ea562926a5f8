//! The pure diff on a 500-member group: 20 joins and 20 leaves since the last snapshot.
//! Run: `cargo bench --bench diff`

use criterion::{criterion_group, criterion_main, Criterion};
use groupwatch::core::diff::{diff, Observed};
use groupwatch::core::model::{GroupKey, GroupSnapshot, Member, Provider, StoredGroup};
use groupwatch::core::report::{ChangeReport, ReportKind};
use std::hint::black_box;

fn member(i: usize) -> Member {
    Member {
        userid: format!("wmOgQhDgAAuXFJGwbve4g{i:011}"),
        member_type: Some(2),
        unionid: Some(format!("ozynqsulJFCZ2z1aYeS8h-{i:08}")),
        join_time: Some(1_600_000_000 + i as i64),
        join_scene: Some(3),
        invitor: Some("abel".into()),
        group_nickname: Some(format!("客户{i}")),
        name: Some(format!("名字{i}")),
        state: None,
        role: None,
    }
}

fn snapshot(range: std::ops::Range<usize>, version: &str) -> GroupSnapshot {
    GroupSnapshot {
        chat_id: "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA".into(),
        name: "销售客服群".into(),
        owner: "ZhuShengBen".into(),
        notice: "文明沟通，拒绝脏话".into(),
        create_time: 1_572_505_490,
        admins: vec!["sam".into()],
        member_version: Some(version.into()),
        members: range.map(member).collect(),
    }
    .normalised()
}

fn bench_diff(c: &mut Criterion) {
    let key = GroupKey::new(Provider::Wecom, "acme", "wrOgQhDgAAMYQiS5ol9G7gK9JVAAAA");
    let previous = StoredGroup::new(snapshot(0..500, "v1"));
    let now = snapshot(20..520, "v2");
    let reports: Vec<ChangeReport> = (500..520)
        .map(|i| ChangeReport {
            occurred_at: 1_700_000_000 + i as i64,
            kind: ReportKind::MembersJoined,
            members: vec![member(i).userid],
            quit_scene: None,
            member_version: Some("v2".into()),
            previous_version: None,
        })
        .collect();
    c.bench_function("diff/500_members_20_joins_20_leaves", |b| {
        b.iter(|| {
            let events = diff(&key, Some(black_box(&previous)), Observed::Group(black_box(&now)), &reports);
            assert_eq!(events.len(), 40);
            black_box(events)
        })
    });
}

criterion_group!(benches, bench_diff);
criterion_main!(benches);
