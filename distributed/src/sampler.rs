//! [`DistributedSampler`]: which samples of each epoch a rank trains on (PyTorch's
//! `torch.utils.data.DistributedSampler`). Needs no MPI: the ranks agree on the order because
//! they share the seed, not because they talk.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Splits the indices `0..len` of a dataset over `num_replicas` ranks: every epoch one order
/// (shuffled from `seed + epoch` when shuffling), padded by repeating its first indices until
/// every rank gets the same number (or cut to a multiple of `num_replicas` with
/// [`drop_last`](DistributedSampler::drop_last)), then dealt out round-robin: rank `r` takes
/// positions `r, r + n, r + 2n, ...`. The shards of an epoch are disjoint except for the padding.
///
/// ```
/// use ferrograd_distributed::DistributedSampler;
/// let shards: Vec<Vec<usize>> =
///     (0..3).map(|r| DistributedSampler::new(10, 3, r).shuffle(false).indices()).collect();
/// assert_eq!(shards, vec![vec![0, 3, 6, 9], vec![1, 4, 7, 0], vec![2, 5, 8, 1]]);
/// let dropped = DistributedSampler::new(10, 3, 2).shuffle(false).drop_last(true).indices();
/// assert_eq!(dropped, vec![2, 5, 8]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistributedSampler {
    len: usize,
    num_replicas: usize,
    rank: usize,
    shuffle: bool,
    seed: u64,
    drop_last: bool,
    epoch: u64,
}

impl DistributedSampler {
    /// A sampler of a dataset of `len` samples for `rank` of `num_replicas` ranks; shuffled
    /// with seed 0, padded, epoch 0.
    ///
    /// # Panics
    /// If `num_replicas` is 0 or `rank >= num_replicas`.
    #[track_caller]
    pub fn new(len: usize, num_replicas: usize, rank: usize) -> Self {
        assert!(
            num_replicas > 0 && rank < num_replicas,
            "DistributedSampler::new: rank {rank} is not in 0..{num_replicas}"
        );
        DistributedSampler { len, num_replicas, rank, shuffle: true, seed: 0, drop_last: false, epoch: 0 }
    }

    /// Whether each epoch's order is shuffled (default `true`).
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// The seed every rank must share (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Drop the tail that does not divide evenly over the ranks instead of padding (default
    /// `false`).
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Sets the epoch whose order [`indices`](DistributedSampler::indices) returns: call it at
    /// the start of every epoch, or every epoch has the same order.
    pub fn set_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
    }

    /// The epoch set last.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of ranks.
    pub fn num_replicas(&self) -> usize {
        self.num_replicas
    }

    /// The number of samples each rank gets per epoch.
    pub fn num_samples(&self) -> usize {
        if self.drop_last {
            self.len / self.num_replicas
        } else {
            self.len.div_ceil(self.num_replicas)
        }
    }

    /// The number of samples of an epoch over all ranks, padding included.
    pub fn total_size(&self) -> usize {
        self.num_samples() * self.num_replicas
    }

    /// This rank's indices for the current epoch.
    pub fn indices(&self) -> Vec<usize> {
        self.indices_for_epoch(self.epoch)
    }

    /// The order of `epoch` over all ranks (padded or cut to [`total_size`](Self::total_size)),
    /// before it is dealt out.
    pub fn global_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.len).collect();
        if self.shuffle {
            order.shuffle(&mut StdRng::seed_from_u64(self.seed.wrapping_add(epoch)));
        }
        let total = self.total_size();
        if total <= order.len() {
            order.truncate(total);
        } else if !order.is_empty() {
            let mut k = 0;
            while order.len() < total {
                order.push(order[k]);
                k += 1;
            }
        }
        order
    }

    /// This rank's indices for `epoch`, without changing the sampler's epoch (a resumed run
    /// asks for any epoch).
    pub fn indices_for_epoch(&self, epoch: u64) -> Vec<usize> {
        self.global_order(epoch).into_iter().skip(self.rank).step_by(self.num_replicas).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_epoch_disjointly() {
        for (len, n) in [(10, 3), (9, 3), (1, 4), (0, 2), (17, 2)] {
            for drop_last in [false, true] {
                let samplers: Vec<_> =
                    (0..n).map(|r| DistributedSampler::new(len, n, r).seed(5).drop_last(drop_last)).collect();
                for epoch in 0..3 {
                    let shards: Vec<Vec<usize>> = samplers.iter().map(|s| s.indices_for_epoch(epoch)).collect();
                    let sizes: Vec<usize> = shards.iter().map(Vec::len).collect();
                    assert!(sizes.iter().all(|&s| s == samplers[0].num_samples()), "{len} {n} {sizes:?}");
                    let mut all: Vec<usize> = shards.concat();
                    all.sort_unstable();
                    let distinct = {
                        let mut d = all.clone();
                        d.dedup();
                        d
                    };
                    if drop_last {
                        assert_eq!(distinct.len(), all.len(), "no sample twice when dropping");
                        assert_eq!(all.len(), len / n * n);
                    } else {
                        assert_eq!(distinct, (0..len).collect::<Vec<_>>(), "every sample once at least");
                        assert_eq!(all.len(), len.div_ceil(n) * n);
                    }
                }
            }
        }
    }

    #[test]
    fn epochs_reorder_and_seeds_agree() {
        let mut a = DistributedSampler::new(100, 2, 0).seed(7);
        let b = DistributedSampler::new(100, 2, 0).seed(7);
        assert_eq!(a.indices(), b.indices());
        let first = a.indices();
        a.set_epoch(1);
        assert_ne!(a.indices(), first);
        assert_eq!(a.indices(), b.indices_for_epoch(1));
        assert_ne!(DistributedSampler::new(100, 2, 0).seed(8).indices(), first);
    }
}
