//! The bridge to hickory-proto's decoded messages (tests and the slow forwarding path).

use std::borrow::Cow;

use crate::message::{DnsName, RData, ResourceRecord};

/// Extracts the records of a decoded upstream message section as owned [`ResourceRecord`]s,
/// keeping their owner names and RDATA (re-encoded without compression).
pub fn upstream_records(records: &[hickory_proto::rr::Record]) -> Vec<ResourceRecord<'static>> {
    use hickory_proto::serialize::binary::{BinEncodable, BinEncoder};
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let mut data = Vec::new();
        let mut encoder = BinEncoder::new(&mut data);
        encoder.set_canonical_form(true);
        if record.data.emit(&mut encoder).is_err() {
            continue;
        }
        let owner = record.name.to_ascii();
        out.push(ResourceRecord {
            owner: DnsName::Text(Cow::Owned(owner.trim_end_matches('.').to_owned())),
            ttl: record.ttl,
            data: RData::Raw {
                rtype: u16::from(record.record_type()),
                data: Cow::Owned(data),
            },
        });
    }
    out
}
