"""Does tf-keras Nadam follow its formula eagerly and inside tf.function (as under fit)?

4 variables of 3 elements, 5 steps of fixed gradients, lr 0.1 * 0.5**(k/2). Prints the
max abs difference from a numpy transcription of `Nadam.update_step`, and from a numpy
emulation of the traced counter rule for offsets c = 1..11 (c = N + 1 = 5 matches).
Needs the `legacy` extra. See docs/optimizer.md."""
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"; os.environ["CUDA_VISIBLE_DEVICES"] = ""
import numpy as np, tensorflow as tf, tf_keras as keras

def formula(params, grads_seq, lr_fn, b1=0.9, b2=0.999, eps=1e-7):
    p = [x.astype(np.float64).copy() for x in params]
    m = [np.zeros_like(x) for x in p]; v = [np.zeros_like(x) for x in p]
    up = 1.0
    for k, grads in enumerate(grads_seq):
        t = k + 1
        u_t = b1 * (1 - 0.5 * 0.96 ** t); u_t1 = b1 * (1 - 0.5 * 0.96 ** (t + 1))
        up = up * u_t; up1 = up * u_t1
        for i, g in enumerate(grads):
            m[i] += (g - m[i]) * (1 - b1); v[i] += (g * g - v[i]) * (1 - b2)
            mh = u_t1 * m[i] / (1 - up1) + (1 - u_t) * g / (1 - up)
            vh = v[i] / (1 - b2 ** t)
            p[i] -= lr_fn(k) * mh / (np.sqrt(vh) + eps)
    return p

rng = np.random.default_rng(0)
init = [rng.normal(size=(3,)).astype(np.float32) for _ in range(4)]
grads = [[rng.normal(size=(3,)).astype(np.float32) for _ in range(4)] for _ in range(5)]
lr = lambda k: 0.1 * 0.5 ** (k / 2)

def run(mode):
    sched = keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)
    opt = keras.optimizers.Nadam(learning_rate=sched)
    vs = [tf.Variable(x) for x in init]
    if mode == "eager":
        for g in grads:
            opt.apply_gradients(zip([tf.constant(x) for x in g], vs))
    else:
        @tf.function
        def step(g):
            opt.apply_gradients(zip(g, vs))
        for g in grads:
            step([tf.constant(x) for x in g])
    return [v.numpy() for v in vs], float(opt._u_product.numpy())

ref = formula(init, grads, lr)
for mode in ("eager", "graph"):
    out, up = run(mode)
    print(mode, "u_product", up, "max|diff| vs formula", max(np.abs(a - b).max() for a, b in zip(out, ref)))
t = np.arange(1, 6); print("formula u_product", np.prod(0.9 * (1 - 0.5 * 0.96 ** t)))

def emul(offset, b1=0.9, b2=0.999, eps=1e-7):
    p = [x.astype(np.float64).copy() for x in init]
    m = [np.zeros_like(x) for x in p]; v = [np.zeros_like(x) for x in p]
    P = 1.0
    for k, gr in enumerate(grads):
        t = k + 1
        u_t = b1 * (1 - 0.5 * 0.96 ** t); u_t1 = b1 * (1 - 0.5 * 0.96 ** (t + 1))
        for i, g in enumerate(gr):
            if offset + i != k + 2:
                P = P * u_t
            up = P; up1 = up * u_t1
            m[i] += (g - m[i]) * (1 - b1); v[i] += (g * g - v[i]) * (1 - b2)
            mh = u_t1 * m[i] / (1 - up1) + (1 - u_t) * g / (1 - up)
            p[i] -= lr(k) * mh / (np.sqrt(v[i] / (1 - b2 ** t)) + eps)
    return p, P
print("offset c, traced u_product emulation, max|diff| vs tf.function")
for off in range(1, 12):
    e, P = emul(off)
    print(off, P, max(np.abs(a - b).max() for a, b in zip(out, e)))
