"""Plain-PyTorch parts of a trial (data, augmentation, encoders, pretext tasks, evaluation) and its Tune adapter."""
