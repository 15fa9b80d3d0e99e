"""Search application: gallery indexes, scene tiling, footprints and reports (`mtgfe.search`)."""
