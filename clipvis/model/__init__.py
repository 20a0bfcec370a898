"""The CLIP-VIS model: frozen CLIP encoder, deformable pixel decoder, query decoder and heads."""
