from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def read_requirements(name: str) -> list[str]:
    lines = (HERE / 'requirements' / name).read_text().splitlines()
    return [line for line in lines if line and not line.startswith(('#', '-r'))]


setup(
    name='django-cqrs-ng',
    version='3.1.0.post1',
    description='Django models replicated between services through a message broker (CQRS).',
    long_description=(HERE / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['dj_cqrs', 'dj_cqrs.*']),
    package_data={'dj_cqrs': ['py.typed', 'migrations/*.py']},
    include_package_data=True,
    python_requires='>=3.10,<4',
    install_requires=read_requirements('base.txt'),
    extras_require={
        'test': list(read_requirements('test.txt')),
        'dev': list(read_requirements('dev.txt')) + read_requirements('test.txt'),
        'reload': ['watchfiles>=0.18,<2'],
        'postgres': ['psycopg[binary]>=3.1'],
        'mysql': ['mysqlclient>=2.1'],
        'redis': ['redis>=4.5'],
    },
    classifiers=[
        'Framework :: Django',
        'Framework :: Django :: 4.2',
        'Framework :: Django :: 5.2',
        'Framework :: Django :: 6.0',
        'Programming Language :: Python :: 3.10',
        'Programming Language :: Python :: 3.11',
        'Programming Language :: Python :: 3.12',
        'Programming Language :: Python :: 3.13',
    ],
)
