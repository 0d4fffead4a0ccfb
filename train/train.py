"""Train one model: a teacher, a baseline student, or a MAG-KD student (``--teacher runs/teacher/best``).

    python -m train.train --backbone tf_efficientnet_lite0 --epochs 30 --output_dir runs/student
    accelerate launch -m train.train ...      # several GPUs, unchanged
    python -m train.train ... --resume latest  # continue a killed run
"""
from train.cli import main_with


def main(argv=None):
    return main_with(__doc__.splitlines()[0], argv)


if __name__ == "__main__":
    main()
