"""Features: audio and text encoders behind one small interface, and the keyed on-disk feature store.

``build_audio_encoder(spec)``, ``build_text_encoder(spec)``, ``ensure_features(manifest, modality, encoder,
store_root) -> FeatureStore``, ``extract_all(workdir, audio_spec, text_spec)`` and, for utterances without
text, ``build_asr(spec)`` + ``fill_missing_text(manifest, asr)``. Heavy libraries (torch, transformers) are
imported only when a model is really needed.
"""

from bber_utils.features.asr import build_asr, fill_missing_text
from bber_utils.features.audio_encoders import LogMelEncoder, TransformersAudioEncoder, build_audio_encoder
from bber_utils.features.extract import Extraction, encoders_from_params, extract_all
from bber_utils.features.store import FeatureError, FeatureStore, ensure_features, open_store
from bber_utils.features.text_encoders import (E5WordsEncoder, HashGramEncoder, TransformersTextEncoder,
                                               build_text_encoder)

__all__ = [
    "LogMelEncoder", "TransformersAudioEncoder", "build_audio_encoder",
    "E5WordsEncoder", "HashGramEncoder", "TransformersTextEncoder", "build_text_encoder",
    "FeatureError", "FeatureStore", "ensure_features", "open_store",
    "build_asr", "fill_missing_text", "Extraction", "extract_all", "encoders_from_params",
]
