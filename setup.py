"""Packaging for diffstyler: reads nbdev's settings.ini with configparser."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': 'Apache-2.0'}   # SPDX expression (PEP 639; setuptools >= 77 refuses License classifiers beside it)
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
lic = licenses[cfg['license']]

requirements = cfg.get('requirements', '').split()
extras = {'fastsam': cfg.get('fastsam_requirements', '').split(),
          'eval': cfg.get('eval_requirements', '').split(),
          'dev': cfg.get('dev_requirements', '').split(),
          'docs': cfg.get('docs_requirements', '').split()}
scripts = [s.strip() for s in cfg.get('console_scripts', '').split('\n') if s.strip()]

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    license=lic, license_files=['LICENSE'], author=cfg['author'], author_email=cfg['author_email'],
    keywords=cfg['keywords'], url=cfg['git_url'],
    long_description=open('README.md', encoding='utf-8').read(), long_description_content_type='text/markdown',
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])], 'Intended Audience :: ' + cfg['audience'],
                 'Natural Language :: ' + cfg['language'], 'Programming Language :: Python :: 3'],
    packages=setuptools.find_packages(include=['diffstyler', 'diffstyler.*']),
    include_package_data=True, package_data={'diffstyler': ['assets/*', 'assets/*/*', 'assets/*/*/*']},
    install_requires=requirements, extras_require=extras, python_requires='>=' + cfg['min_python'],
    entry_points={'console_scripts': scripts, 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False)
