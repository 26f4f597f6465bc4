//! `ferrograd-optim`: optimizers that update [`Param`](ferrograd_autograd::Param)s from
//! [`Grads`](ferrograd_autograd::Grads), learning-rate schedules and gradient clipping.

#![warn(missing_docs)]
