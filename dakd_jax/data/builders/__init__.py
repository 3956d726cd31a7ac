"""TFDS builders for the official dataset folders (TF-free: path-based, array_record)."""

from dakd_jax.data.builders.bdd100k import Bdd100k
from dakd_jax.data.builders.cityscapes import Cityscapes
from dakd_jax.data.builders.gta5 import Gta5
from dakd_jax.data.builders.idd import Idd
from dakd_jax.data.builders.mapillary import Mapillary
from dakd_jax.data.builders.official import OfficialLayoutBuilder
from dakd_jax.data.builders.synthia import Synthia

# Config `dataset` name -> builder class.
BUILDERS: dict[str, type[OfficialLayoutBuilder]] = {
    'gta5': Gta5,
    'cityscapes': Cityscapes,
    'bdd100k': Bdd100k,
    'idd': Idd,
    'mapillary': Mapillary,
    'synthia': Synthia,
}
