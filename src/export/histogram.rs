//! One explicit-bucket histogram: what every request series holds per instrument.

/// The trace of a recent request in one bucket: a link from a slow bucket to its trace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Exemplar {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub value: f64,
    pub unix_ns: u64,
}

/// The cumulative totals an OTLP delta export already sent.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    pub counts: Vec<u64>,
    pub sum: f64,
    pub count: u64,
    /// Since the start, or since the last delta export.
    pub min: f64,
    pub max: f64,
    /// Per bucket, the newest sampled request's trace; empty until traces are on.
    pub exemplars: Vec<Option<Exemplar>>,
    /// Set by OTLP delta exports only.
    pub mark: Option<Box<Mark>>,
}

impl Histogram {
    pub(crate) fn new(bounds: &[f64]) -> Self {
        Histogram {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            exemplars: Vec::new(),
            mark: None,
        }
    }

    /// Upper bounds are inclusive, as in Prometheus' `le`.
    fn bucket(bounds: &[f64], v: f64) -> usize {
        bounds.iter().position(|&b| v <= b).unwrap_or(bounds.len())
    }

    pub(crate) fn observe(&mut self, bounds: &[f64], v: f64) {
        self.counts[Self::bucket(bounds, v)] += 1;
        self.sum += v;
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub(crate) fn exemplar(&mut self, bounds: &[f64], e: Exemplar) {
        if self.exemplars.is_empty() {
            self.exemplars = vec![None; bounds.len() + 1];
        }
        self.exemplars[Self::bucket(bounds, e.value)] = Some(e);
    }

    /// Adds another histogram of the same bounds (another process with the same labels).
    pub(crate) fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.sum += o.sum;
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if !o.exemplars.is_empty() {
            if self.exemplars.is_empty() {
                self.exemplars = vec![None; o.exemplars.len()];
            }
            for (a, b) in self.exemplars.iter_mut().zip(&o.exemplars) {
                if let Some(b) = b {
                    if a.is_none_or(|a| a.unix_ns <= b.unix_ns) {
                        *a = Some(*b);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::names::DURATION_BUCKETS;

    #[test]
    fn buckets_are_inclusive_upper_bounds_and_merge_adds() {
        let mut h = Histogram::new(DURATION_BUCKETS);
        for v in [0.0, 0.005, 0.0051, 10.0, 11.0] {
            h.observe(DURATION_BUCKETS, v);
        }
        assert_eq!(h.counts[0], 1, "0 is in le=0");
        assert_eq!(h.counts[1], 1, "0.005 is in le=0.005");
        assert_eq!(h.counts[2], 1);
        assert_eq!(h.counts[14], 1, "10 in le=10");
        assert_eq!(h.counts[15], 1, "+Inf");
        assert_eq!((h.count, h.min, h.max), (5, 0.0, 11.0));
        let mut m = Histogram::new(DURATION_BUCKETS);
        m.merge(&h);
        m.merge(&h);
        assert_eq!((m.count, m.counts[15]), (10, 2));
        assert!((m.sum - 2.0 * h.sum).abs() < 1e-12);
    }

    #[test]
    fn an_exemplar_sits_in_its_bucket_and_the_newest_wins_a_merge() {
        let e = |unix_ns, value| Exemplar {
            trace_id: [1; 16],
            span_id: [2; 8],
            value,
            unix_ns,
        };
        let mut a = Histogram::new(DURATION_BUCKETS);
        a.exemplar(DURATION_BUCKETS, e(5, 0.03));
        assert_eq!(a.exemplars[4], Some(e(5, 0.03)), "(0.025, 0.05]");
        let mut b = Histogram::new(DURATION_BUCKETS);
        b.exemplar(DURATION_BUCKETS, e(9, 0.04));
        let mut m = Histogram::new(DURATION_BUCKETS);
        m.merge(&b);
        m.merge(&a);
        assert_eq!(m.exemplars[4], Some(e(9, 0.04)));
    }
}
