//! The traffic history tables (schema version 4): `traffic_1m` and `traffic_1h`, keyed by the
//! sample's start (unix milliseconds) and `"<user> <client> <rule>"`, so a time range is one
//! range scan and a prune one range delete.

use portunus_core::history::{Bucket, TrafficSample};
use portunus_core::ids::Timestamp;
use portunus_core::ports::{HistoryStore, StoreError};
use redb::{ReadableTable, TableDefinition, TableHandle};

use crate::error::{decode, store_err};
use crate::schema::{TRAFFIC_1H, TRAFFIC_1M};
use crate::source::{Source, View};

/// The table of a bucket.
pub(crate) fn table_of(bucket: Bucket) -> TableDefinition<'static, (u64, &'static str), &'static [u8]> {
    match bucket {
        Bucket::Minute => TRAFFIC_1M,
        Bucket::Hour => TRAFFIC_1H,
    }
}

/// The second half of a sample's row key.
pub(crate) fn sample_key(sample: &TrafficSample) -> String {
    format!("{} {} {}", sample.key.user.as_str(), sample.key.client.as_str(), sample.key.rule.get())
}

impl<S: Source> HistoryStore for View<S> {
    fn traffic_samples(
        &self,
        bucket: Bucket,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<TrafficSample>, StoreError> {
        let table = table_of(bucket);
        let rows = self.0.table(table)?;
        let mut samples = Vec::new();
        if to <= from {
            return Ok(samples);
        }
        for row in rows.range((from.as_millis(), "")..(to.as_millis(), "")).map_err(store_err)? {
            let (key, value) = row.map_err(store_err)?;
            let (start, rest) = key.value();
            samples.push(decode(table.name(), &format!("{start} {rest}"), value.value())?);
        }
        Ok(samples)
    }
}
