//! An Adam step over a parameter big enough to be cut into chunks for the threads (a large one,
//! and one just above the split threshold) gives the same bits
//! on 1, 2 and 3 threads (plain, AMSGrad and AdamW), with chunk edges that do not fall on
//! vector boundaries.

use ferrograd_autograd::{Param, Var};
use ferrograd_optim::{Adam, GroupOptions, Optim, Optimizer};
use ferrograd_tensor::{set_num_threads, threads_for, Tensor};

/// Elements of the parameter: odd, so the chunks differ in length.
const LEN: usize = 200_003;

/// Elements of a parameter the size of LeNet's 120x84 weight (plus one): split over 2 threads,
/// not over 3.
const SMALL: usize = 10_081;

/// The bits of a `len`-element parameter after 3 steps of `rule` on gradients that change
/// every step.
fn train(rule: Adam, len: usize) -> Vec<u32> {
    let p = Param::new(Tensor::<f32>::from_fn(&[len], |i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.3));
    let mut opt = Optim::new(rule, vec![p.clone()], GroupOptions { weight_decay: 0.01, ..GroupOptions::lr(1e-2) });
    for step in 0..3 {
        let c = Tensor::<f32>::from_fn(&[len], |i| (((i + 7 * step) * 13 % 29) as f32 / 14.0 - 1.0) * 1e-3);
        let loss = (&p.var() * &Var::constant(c)).sum() + p.var().square().sum() * 0.5;
        opt.step(&loss.backward());
    }
    p.value().to_vec().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn adam_steps_are_bit_identical_on_1_2_and_3_threads() {
    for (name, rule) in
        [("adam", Adam::default()), ("amsgrad", Adam { amsgrad: true, ..Adam::default() }), ("adamw", Adam::adamw())]
    {
        for len in [LEN, SMALL] {
            set_num_threads(1);
            let want = train(rule, len);
            for threads in [2, 3] {
                set_num_threads(threads);
                if len == LEN {
                    assert_eq!(threads_for(LEN, 1 << 15), threads, "the step is split over {threads} threads");
                }
                let got = train(rule, len);
                let diff = want.iter().zip(&got).filter(|(a, b)| a != b).count();
                assert_eq!(diff, 0, "{name}: {diff} of {len} elements differ between 1 and {threads} threads");
            }
        }
    }
}
