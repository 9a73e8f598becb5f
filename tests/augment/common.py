"""Templates of one emotion in the paper's schema, valid and with a bad tag."""

# Written for this test (not taken from any corpus or from the reference's templates).
VALID = {
    "subjects": ["My brother", "The new neighbour", "Our teacher"],
    "verbs": ["finally called me back", "won the big prize", "remembered my birthday"],
    "interjections": ["Wow", "(laughs) Oh yes"],
    "contexts": ["after all these months", "right before dinner"],
    "templates": ["{i}, {s} {v} {c}!", "I can't believe {s} {v} {c}."],
}

BAD_TAG = dict(VALID, interjections=["Wow", "(cries) Oh no"])
