"""Training methods: each module exports create / train_step / eval_settings."""
