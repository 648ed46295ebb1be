"""Run under `horovodrun --gloo -np 2`: a tiny softmax-regression ModelDesc trained with
tensorpack's HorovodTrainer on rank-specific generated batches. Writes, per rank,
the weights before training, after step 1 and at the end, and the batches it used; and
what training.callbacks' RankWeightsCheck reports, during training (ranks in step) and afterwards
on the final weights with rank 1's W changed by 1e-6 and by 1e-2 in one element."""
import sys

import numpy as np
import tensorflow as tf

import core.compat  # noqa: F401  (the TF2 workarounds, before TensorFlow loads)
from training.callbacks import RankWeightsCheck, RanksDiverged
from core.dist import horovod
from tensorpack import HorovodTrainer, ModelDesc, TrainConfig, launch_train_with_config
from tensorpack.callbacks import Callback
from tensorpack.callbacks.monitor import MonitorBase
from tensorpack.dataflow import DataFromList

OUT = sys.argv[1]
STEPS = 4
DIM, CLASSES, BATCH, LR = 5, 3, 8, 0.5


class Tiny(ModelDesc):
    def inputs(self):
        return [tf.TensorSpec([None, DIM], tf.float32, "x"), tf.TensorSpec([None], tf.int32, "y")]

    def build_graph(self, x, y):
        w = tf.compat.v1.get_variable("W", [DIM, CLASSES], initializer=tf.compat.v1.random_normal_initializer())
        b = tf.compat.v1.get_variable("b", [CLASSES], initializer=tf.compat.v1.random_normal_initializer())
        logits = tf.matmul(x, w) + b
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="cost")

    def optimizer(self):
        return tf.compat.v1.train.GradientDescentOptimizer(LR)


class Record(Callback):
    _chief_only = False

    def _setup_graph(self):
        self.vars = [v for v in tf.compat.v1.global_variables() if v.op.name in ("W", "b")]
        self.history = []

    def _before_train(self):
        self.history.append(self.trainer.sess.run(self.vars))

    def _trigger_step(self):
        self.history.append(self.trainer.sess.run(self.vars))


class Scalars(MonitorBase):
    def __init__(self):
        self.seen = {}

    def process_scalar(self, name, val):
        self.seen[name] = float(val)


hvd = horovod()
rank = hvd.rank()
rng = np.random.RandomState(100 + rank)   # every rank has its own data
batches = [[rng.randn(BATCH, DIM).astype("float32"), rng.randint(0, CLASSES, BATCH).astype("int32")]
           for _ in range(STEPS)]
tf.compat.v1.set_random_seed(1234 + rank)  # different initial weights per rank: broadcast must fix it
record = Record()
scalars = Scalars()
trainer = HorovodTrainer(average=True)
config = TrainConfig(model=Tiny(), dataflow=DataFromList(batches, shuffle=False),
                     callbacks=[record, RankWeightsCheck()], monitors=[scalars], steps_per_epoch=STEPS, max_epoch=1)
launch_train_with_config(config, trainer)

# the check on the final weights, with rank 1's copy of W changed in one element
checks = {}
for delta in (0.0, 1e-6, 1e-2):
    with tf.Graph().as_default():
        w_final = record.history[-1][0].copy()
        if rank == 1:
            w_final[0, 0] += delta
        tf.compat.v1.get_variable("W", initializer=w_final)
        tf.compat.v1.get_variable("b", initializer=record.history[-1][1])
        check = RankWeightsCheck(tolerance=1e-4)
        check._setup_graph()
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            differing, spread, worst = check.measure(sess)
            try:
                check.judge(differing, spread, worst, "test")
                verdict = "ok"
            except RanksDiverged as e:
                verdict = str(e)
    checks[delta] = (differing, spread, verdict)
np.savez("%s/rank%d.npz" % (OUT, rank), size=hvd.size(),
         **{"W%d" % i: h[0] for i, h in enumerate(record.history)},
         **{"b%d" % i: h[1] for i, h in enumerate(record.history)},
         **{"x%d" % i: bt[0] for i, bt in enumerate(batches)},
         **{"y%d" % i: bt[1] for i, bt in enumerate(batches)},
         train_variables_differing=scalars.seen.get("ranks/variables_differing", -1),
         train_weight_spread=scalars.seen.get("ranks/weight_spread", -1),
         **{"check_%g_differing" % d: np.array(c[0], dtype=str) for d, c in checks.items()},
         **{"check_%g_spread" % d: c[1] for d, c in checks.items()},
         **{"check_%g_verdict" % d: c[2] for d, c in checks.items()})
print("rank %d done" % rank)
