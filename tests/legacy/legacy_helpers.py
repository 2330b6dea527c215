"""Constants shared by the legacy tests (a module of its own: see tests/model_helpers.py)."""

# The seed's warning (docs/legacy.md §3), verbatim and in its order.
SEED_MISSING = [
    "tf_roberta_model/roberta/pooler/dense/kernel:0",
    "tf_roberta_model/roberta/pooler/dense/bias:0",
    "qarac_trainer_model/qarac_encoder_model/global_attention_pooling_head/local projection:0",
    "qarac_trainer_model/qarac_encoder_model_1/global_attention_pooling_head_1/local projection:0",
    "tf_roberta_model_1/roberta/pooler/dense/kernel:0",
    "tf_roberta_model_1/roberta/pooler/dense/bias:0",
]
POOLERS = [name for name in SEED_MISSING if "pooler" in name]
LOCAL_PROJECTIONS = [name for name in SEED_MISSING if "local projection" in name]
