use bytes::Bytes;
use stator_core::proto::{self, write_op::Op};

/// An atomic write batch: a plain list of ops, applied all or none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub ops: Vec<proto::WriteOp>,
}

fn b(x: impl Into<Bytes>) -> Bytes {
    x.into()
}

fn bs<I, V>(values: I) -> Vec<Bytes>
where
    I: IntoIterator<Item = V>,
    V: Into<Bytes>,
{
    values.into_iter().map(Into::into).collect()
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(proto::WriteOp { op: Some(op) });
        self
    }

    pub fn value_put(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> &mut Self {
        self.push(Op::ValuePut(proto::ValuePut {
            state: state.into(),
            key: b(key),
            value: b(value),
        }))
    }

    pub fn value_clear(&mut self, state: &str, key: impl Into<Bytes>) -> &mut Self {
        self.push(Op::ValueClear(proto::ValueClear {
            state: state.into(),
            key: b(key),
        }))
    }

    pub fn list_append<I, V>(&mut self, state: &str, key: impl Into<Bytes>, values: I) -> &mut Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Bytes>,
    {
        self.push(Op::ListAppend(proto::ListAppend {
            state: state.into(),
            key: b(key),
            values: bs(values),
        }))
    }

    pub fn list_set<I, V>(&mut self, state: &str, key: impl Into<Bytes>, values: I) -> &mut Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Bytes>,
    {
        self.push(Op::ListSet(proto::ListSet {
            state: state.into(),
            key: b(key),
            values: bs(values),
        }))
    }

    pub fn list_clear(&mut self, state: &str, key: impl Into<Bytes>) -> &mut Self {
        self.push(Op::ListClear(proto::ListClear {
            state: state.into(),
            key: b(key),
        }))
    }

    pub fn map_put(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
        map_key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> &mut Self {
        self.push(Op::MapPut(proto::MapPut {
            state: state.into(),
            key: b(key),
            map_key: b(map_key),
            value: b(value),
        }))
    }

    pub fn map_remove(
        &mut self,
        state: &str,
        key: impl Into<Bytes>,
        map_key: impl Into<Bytes>,
    ) -> &mut Self {
        self.push(Op::MapRemove(proto::MapRemove {
            state: state.into(),
            key: b(key),
            map_key: b(map_key),
        }))
    }

    pub fn map_clear(&mut self, state: &str, key: impl Into<Bytes>) -> &mut Self {
        self.push(Op::MapClear(proto::MapClear {
            state: state.into(),
            key: b(key),
        }))
    }

    pub fn operator_state_set<I, V>(&mut self, name: &str, values: I) -> &mut Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Bytes>,
    {
        self.push(Op::OperatorStateSet(proto::OperatorStateSet {
            name: name.into(),
            values: bs(values),
        }))
    }

    /// Registers the timer `(domain, key, name, time)`; registering it again changes nothing.
    pub fn timer_register(
        &mut self,
        domain: proto::TimeDomain,
        key: impl Into<Bytes>,
        name: impl Into<Bytes>,
        time: u64,
    ) -> &mut Self {
        self.push(Op::TimerRegister(proto::TimerRegister {
            domain: domain as i32,
            key: b(key),
            name: b(name),
            time,
        }))
    }

    /// Deletes a timer. In the batch of a timer's handler, this is what fires it exactly once.
    pub fn timer_delete(
        &mut self,
        domain: proto::TimeDomain,
        key: impl Into<Bytes>,
        name: impl Into<Bytes>,
        time: u64,
    ) -> &mut Self {
        self.push(Op::TimerDelete(proto::TimerDelete {
            domain: domain as i32,
            key: b(key),
            name: b(name),
            time,
        }))
    }

    /// Deletes a timer that [`crate::Client::timers_due`] returned (fires it).
    pub fn timer_fired(&mut self, timer: &crate::Timer) -> &mut Self {
        self.timer_delete(
            timer.domain,
            timer.key.clone(),
            timer.name.clone(),
            timer.time,
        )
    }

    /// Moves this replica's event-time watermark to `watermark`; a lower value than the current
    /// one leaves it where it is.
    pub fn watermark_advance(&mut self, watermark: u64) -> &mut Self {
        self.push(Op::WatermarkAdvance(proto::WatermarkAdvance { watermark }))
    }
}
