"""The names of QARAC's four training objectives: a leaf module, so that code judging results
(`parity.comparator`) can name them without importing the model."""

# In the order the legacy sums them (the trainer's outputs).
OBJECTIVES = ("encode_decode", "question_answering", "reasoning", "consistency")
