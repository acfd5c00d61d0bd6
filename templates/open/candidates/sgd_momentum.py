"""SGD with momentum: the bias-corrected EMA of the gradient (decay 0.9), learning rate annealed linearly to 0.

In EMA form the step is lr * m_hat with m_hat = m / (1 - 0.9^t); classical heavy-ball momentum with
learning rate lr' takes the same steps for lr = lr' / (1 - 0.9) once the bias correction has faded.
"""

LR = 1.0  # the best of a sweep over 0.1, 0.3, 1, 3 on Breakout-MinAtar (tied with 3; README.md)
B1 = 2  # index of the decay 0.9


def update(f):
    m_hat = f.momentum[..., B1] / (1.0 - 0.9**f.step)
    return -LR * (1.0 - f.train_frac) * m_hat
