"""Transfer sets: a few labelled training images and many unlabelled ones that the teacher labels (05_distill_student).

This is how distillation is used most in practice: the teacher is a model trained elsewhere, on labels the student's
owner does not have, and the student's owner has few labels and many unlabelled images. An unlabelled image
carries the label :data:`UNLABELLED` in ``train_labels``; :func:`labkit.train.distill` gives it the soft term only
(its hard, cross-entropy term is masked to the labelled images), and :func:`labkit.train.train` refuses it.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from labkit.data import CifarData, ImageSubset, stratified_indices
from labkit.evaluate import predict_logits

UNLABELLED = -1


class TransferSetError(ValueError):
    """A transfer set that cannot be built or trained on as asked; the message says what to change."""


def labelled_mask(labels: torch.Tensor) -> torch.Tensor:
    """True where an image has a label, False where its label is :data:`UNLABELLED`."""
    return labels != UNLABELLED


def count_unlabelled(data: CifarData) -> int:
    """How many training images of ``data`` have no label."""
    return int((~labelled_mask(data.train_labels)).sum())


def transfer_set(data: CifarData, labelled_per_class: int, seed: int = 0) -> CifarData:
    """Every training image of ``data``, with the labels of only ``labelled_per_class`` per class kept.

    The kept labels are a stratified, seeded draw; every other image's label becomes :data:`UNLABELLED`. Take the
    validation split first (:meth:`CifarData.with_validation`): it keeps its labels, for choosing settings.
    """
    if count_unlabelled(data):
        raise TransferSetError("this data is a transfer set already: build the transfer set from fully labelled data")
    keep = stratified_indices(data.train_labels, labelled_per_class, seed)
    labels = torch.full_like(data.train_labels, UNLABELLED)
    labels[keep] = data.train_labels[keep]
    return replace(data, train_labels=labels)


def with_unlabelled(data: CifarData, images: torch.Tensor) -> CifarData:
    """``data``'s training images followed by unlabelled ``images`` (e.g. photos from another source)."""
    reference = data.train_images
    if not isinstance(images, torch.Tensor) or images.dtype != reference.dtype or \
            tuple(images.shape[1:]) != tuple(reference.shape[1:]):
        raise TransferSetError(f"unlabelled images must be a {reference.dtype} tensor N x "
                               f"{' x '.join(map(str, reference.shape[1:]))} like the labelled ones, got "
                               f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    return replace(data, train_images=torch.cat([reference[:], images]),
                   train_labels=torch.cat([data.train_labels,
                                           torch.full((len(images),), UNLABELLED, dtype=data.train_labels.dtype)]))


def labelled_part(data: CifarData, repeat: int = 1) -> CifarData:
    """Only the training images of ``data`` that have a label, each ``repeat`` times (nothing is copied).

    Repeating gives a small labelled set as many images per epoch as a larger one, so that arms trained on
    either see the same number of images in the same number of epochs (and are evaluated as often).
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    index = labelled_mask(data.train_labels).nonzero().flatten().repeat(repeat)
    return replace(data, train_images=ImageSubset(data.train_images, index), train_labels=data.train_labels[index])


@torch.no_grad()
def pseudo_labelled(data: CifarData, teacher: nn.Module) -> CifarData:
    """``data`` with every unlabelled training image given the teacher's top class (a hard pseudo-label).

    The labels that exist are kept. Training on the result with cross-entropy separates "more data" from "dark
    knowledge": the student sees the same images as when distilled, but not the teacher's probabilities.
    """
    missing = ~labelled_mask(data.train_labels)
    labels = data.train_labels.clone()
    if missing.any():
        index = missing.nonzero().flatten()
        logits = predict_logits(teacher, data.train_images[index])
        if logits.shape[1] != len(data.classes):
            raise TransferSetError(f"the teacher has {logits.shape[1]} classes and the data {len(data.classes)}: "
                                   "pseudo-label with a teacher of the data's classes")
        labels[index] = logits.argmax(1).to(labels.dtype)
    return replace(data, train_labels=labels)
